"""An app that was built, served and shut down is freed with its services and ledgers
once the last reference to it goes: nothing in the process (a module-level cache or
handler, a plugin, a registry, a thread) keeps it. A test process builds hundreds of
apps; each one kept made the heap, and the collector's full passes over it, grow (the
seventh session's xdist workers held 1.5M objects, and a pass stalled every thread for
seconds)."""

import gc
import weakref
from pathlib import Path

from litestar.testing import TestClient

from app.api.app import create_app
from app.application.ledger import Ledger
from app.bootstrap import build_services, shutdown
from app.settings import Settings
from tests.api.helpers import fund, ok, open_account, open_issuer

# Apps built one after another: a holder that keeps only the latest app is caught too.
APPS_BUILT = 2


def serve_one_app(data_dir: Path) -> None:
    """Build an app with its projections, answer requests that reach the API's routes
    (queries with parameters, a transfer, metrics, readiness) and the explorer, and shut
    it down."""
    settings = Settings(data_dir=data_dir, read_wait_seconds=2.0, log_format="console")
    services = build_services(settings, projections=True)
    try:
        app = create_app(services)
        key = services.keys.create("admin")
        with TestClient(app=app) as client:
            client.headers["Authorization"] = f"Bearer {key}"
            open_issuer(client)
            open_account(client, "alice")
            funded = fund(client, "alice", 5)
            ok(client.get("/v1/accounts", params={"limit": 1}))
            # At the funding's position: alice's account and entry are in the views then
            # (at position 1 only the issuer is).
            entries = {"min_position": funded["position"]}
            ok(client.get("/v1/accounts/alice/entries", params=entries))
            assert client.get("/v1/health").status_code == 200
            assert client.get("/v1/ready").status_code == 200
            assert client.get("/metrics").status_code == 200
            assert client.get("/explorer/login").status_code == 200
        # What the test looks for is there to be found while the app is alive.
        assert any(ledger is services.ledger for ledger in ledgers_alive())
    finally:
        shutdown(services)


def ledgers_alive() -> list[Ledger]:
    """Every ledger object the collector sees (the frozen ones handed back first: the
    projections' first catch-up in a process freezes what is alive then, out of the
    collector's reach, ``projections.catchup.freeze_long_lived_objects``)."""
    gc.unfreeze()
    gc.collect()
    return [tracked for tracked in gc.get_objects() if isinstance(tracked, Ledger)]


def test_apps_built_and_shut_down_leave_no_ledger_alive(tmp_path: Path) -> None:
    before = weakref.WeakSet(ledgers_alive())
    for number in range(APPS_BUILT):
        data_dir = tmp_path / str(number)
        data_dir.mkdir()
        serve_one_app(data_dir)
    left = [ledger for ledger in ledgers_alive() if ledger not in before]
    holders = [type(holder).__qualname__ for ledger in left for holder in gc.get_referrers(ledger)]
    assert not left, f"{len(left)} ledger(s) of a dropped app still alive, held by {holders}"
