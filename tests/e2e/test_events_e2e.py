"""The event stream and webhook deliveries as users run them: real processes on real
sockets. An SSE client resumes with Last-Event-ID across a killed and restarted
server, missing nothing; a `ledger deliver` worker SIGKILLed mid-delivery resumes and
every event arrives (a repeat carries the same webhook-id)."""

import importlib.util
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Final

import httpx
import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.events.database import Database, events_database_url
from app.events.store import FeedStore
from app.persistence.stores import event_store_env, sqlite_url
from app.webhooks.delivery import RECORD_BATCH_MAX
from app.webhooks.store import WebhookStore
from tests.e2e.test_serve import (
    ISSUER,
    UNIT,
    admin_key_of,
    assert_stops_cleanly,
    environment,
    ledger_command,
    serving,
)
from tests.support.ports import free_port
from tests.support.receiver import Receiver

pytestmark = pytest.mark.slow

WAIT_SECONDS: Final = 30.0


def read_events(
    response: httpx.Response, count: int
) -> Iterator[tuple[str, str, dict[str, object]]]:
    """(id, event type, data) of the next ``count`` events of a Server-Sent Events
    response; comments (keep-alives) and events without data are skipped, as the
    specification's dispatch does."""
    fields: dict[str, str] = {}
    seen = 0
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line == "":
            if fields.get("data"):
                yield fields["id"], fields["event"], json.loads(fields["data"])
                seen += 1
                if seen == count:
                    return
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")


def test_a_stream_resumes_with_last_event_id_across_a_killed_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    received: list[tuple[str, str, dict[str, object]]] = []
    with serving(data_dir, run=1) as server:
        key = admin_key_of(server)
        headers = {"Authorization": f"Bearer {key}"}
        with server.client(key) as client:
            assert (
                client.post(
                    "/v1/accounts", json={"id": ISSUER, "unit": UNIT, "allow_negative": True}
                ).status_code
                == 201
            )
            with client.stream("GET", "/v1/events/stream", timeout=WAIT_SECONDS) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                for n in range(3):
                    client.post("/v1/accounts", json={"id": f"user:{n}", "unit": UNIT})
                received += read_events(response, 4)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()

    last_id = received[-1][0]
    with (
        serving(data_dir, run=2) as server,
        httpx.Client(base_url=server.url, headers=headers, timeout=WAIT_SECONDS) as client,
    ):
        for n in range(3, 6):
            client.post("/v1/accounts", json={"id": f"user:{n}", "unit": UNIT})
        with client.stream(
            "GET", "/v1/events/stream", headers={"Last-Event-ID": last_id}
        ) as response:
            received += read_events(response, 3)
        everything = client.get("/v1/events", params={"limit": 100}).json()["items"]

    assert [data["id"] for _, _, data in received] == [event["id"] for event in everything]
    assert [kind for _, kind, _ in received] == ["account.opened"] * 7
    cursors = [int(cursor) for cursor, _, _ in received]
    assert cursors == sorted(set(cursors))


def test_an_idle_stream_sends_keep_alive_comments(tmp_path: Path) -> None:
    env = {"LEDGER_EVENT_STREAM_KEEPALIVE_SECONDS": "0.2"}
    with serving(tmp_path / "var", extra_env=env) as server:
        key = admin_key_of(server)
        with server.client(key) as client, client.stream("GET", "/v1/events/stream") as stream:
            started = time.monotonic()
            comments = []
            for line in stream.iter_lines():
                if line.startswith(":"):
                    comments.append(line)
                if comments.count(": keep-alive") >= 3:
                    break
            assert time.monotonic() - started < 10


def test_sigterm_ends_open_streams_and_the_server_stops_promptly(tmp_path: Path) -> None:
    with serving(tmp_path / "var") as server:
        key = admin_key_of(server)
        opened, ended = threading.Event(), threading.Event()

        def hold_a_stream() -> None:
            with (
                server.client(key) as client,
                client.stream("GET", "/v1/events/stream") as stream,
            ):
                if stream.status_code == 200:
                    opened.set()
                for _ in stream.iter_lines():
                    pass
            ended.set()

        holder = threading.Thread(target=hold_a_stream, daemon=True)
        holder.start()
        # The stream is open (answered 200, the server holds it) before the signal.
        assert opened.wait(WAIT_SECONDS)
        assert_stops_cleanly(server)  # within 10 s, status 0, no traceback
        assert ended.wait(WAIT_SECONDS)
        holder.join(WAIT_SECONDS)


def test_too_many_streams_are_refused_with_503(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with serving(data_dir, extra_env={"LEDGER_EVENT_STREAMS_MAX": "2"}) as server:
        key = admin_key_of(server)
        with server.client(key) as one, server.client(key) as two, server.client(key) as three:
            with (
                one.stream("GET", "/v1/events/stream") as first,
                two.stream("GET", "/v1/events/stream") as second,
            ):
                assert (first.status_code, second.status_code) == (200, 200)
                refused = three.get("/v1/events/stream")
                assert refused.status_code == 503
                assert refused.json()["code"] == "too_many_streams"
            # Closed streams give their slots back.
            deadline = time.monotonic() + WAIT_SECONDS
            while True:
                with three.stream("GET", "/v1/events/stream") as again:
                    if again.status_code == 200:
                        break
                assert time.monotonic() < deadline
                time.sleep(0.1)


def start_deliver(data_dir: Path, run: int, read_model_url: str) -> subprocess.Popen[bytes]:
    env = {
        **environment(data_dir),
        "LEDGER_READ_MODEL": read_model_url,
        "LEDGER_WEBHOOK_RETRY_BASE_SECONDS": "0.05",
        "LEDGER_WEBHOOK_RETRY_CAP_SECONDS": "0.2",
        "LEDGER_WEBHOOK_TIMEOUT_SECONDS": "2",
    }
    with (data_dir / f"deliver-{run}.err").open("w") as err:
        return subprocess.Popen([*ledger_command(), "deliver"], env=env, stderr=err)


@pytest.mark.parametrize("read_model", ["sqlite", "postgres"])
def test_a_delivery_worker_killed_mid_delivery_loses_nothing(
    read_model: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    event_store = sqlite_url(data_dir / "events.sqlite")
    read_model_url = (
        str(request.getfixturevalue("postgres_url"))
        if read_model == "postgres"
        else sqlite_url(data_dir / "views.sqlite")
    )
    # The delivery checkpoints live in the read-model database, SQLite or PostgreSQL.
    database = Database(events_database_url(read_model_url))
    feed, webhooks = FeedStore(database), WebhookStore(database)
    with Receiver(lambda _: (200, 0.03)) as receiver:
        webhooks.create(receiver.url, ["transfer.recorded"], "e2e")
        with Ledger(event_store_env(event_store)) as ledger:
            ledger.open_account(OpenAccount(id=ISSUER, unit=UNIT, allow_negative=True))
            ledger.open_account(OpenAccount(id="alice", unit=UNIT))
            for n in range(120):
                ledger.record_transfer(
                    RecordTransfer(
                        id=f"t{n}", debit_account_id=ISSUER, credit_account_id="alice", amount=1
                    )
                )
        worker = start_deliver(data_dir, 1, read_model_url)
        try:
            assert receiver.wait_for(lambda got: len(got) >= 30, WAIT_SECONDS)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            killed_at = len(receiver.received)
            assert killed_at < 120
            worker = start_deliver(data_dir, 2, read_model_url)
            ids_wanted = 120
            assert receiver.wait_for(
                lambda got: len({json.loads(g.body)["id"] for g in got}) >= ids_wanted,
                WAIT_SECONDS * 2,
            ), (data_dir / "deliver-2.err").read_text()[-2000:]
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=20) == 0

    payloads = [json.loads(item.body) for item in receiver.received]
    ids = [payload["id"] for payload in payloads]
    headers_ids = [item.headers["webhook-id"] for item in receiver.received]
    assert ids == headers_ids  # a repeat carries the same webhook-id
    first_seen = list(dict.fromkeys(ids))
    assert [p["data"]["transfer"]["id"] for p in payloads if p["id"] in first_seen][:1] == ["t0"]
    transfers_in_order = [
        payload["data"]["transfer"]["id"]
        for index, payload in enumerate(payloads)
        if ids.index(payload["id"]) == index
    ]
    assert transfers_in_order == [f"t{n}" for n in range(120)]
    # At most what was delivered since the last checkpoint, again (same ids).
    assert len(ids) - len(first_seen) <= RECORD_BATCH_MAX + 1
    expected = [row.event()["id"] for row in feed.page(0, 1000, ("transfer.recorded",))]
    assert first_seen == expected
    database.close()


# The consumer example in docs/ --------------------------------------------------------

EXAMPLE: Final = Path(__file__).resolve().parents[2] / "docs" / "examples" / "events_consumer.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("events_consumer", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait_for_feed(client: httpx.Client, count: int) -> None:
    """Until the feed holds ``count`` events (it follows the log a poll behind)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while len(client.get("/v1/events").json()["items"]) < count:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def run_example_feed(server_url: str, key: str, cursor_file: Path) -> list[str]:
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "feed",
            "--url",
            server_url,
            "--key",
            key,
            "--cursor-file",
            str(cursor_file),
            "--exit-when-idle",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line)["id"] for line in done.stdout.splitlines()]


def test_the_example_consumer_follows_the_feed_across_restarts_and_verifies_webhooks(
    tmp_path: Path,
) -> None:
    example = load_example()
    handled: list[dict[str, object]] = []
    with serving(tmp_path / "var") as server:
        key = admin_key_of(server)
        with server.client(key) as client:
            client.post("/v1/accounts", json={"id": ISSUER, "unit": UNIT, "allow_negative": True})
            # The feed is projected a poll behind the log (in serve's child process on
            # the embedded default): the first run starts once it shows the first event.
            wait_for_feed(client, 1)
            first = run_example_feed(server.url, key, tmp_path / "cursor.txt")
            client.post("/v1/accounts", json={"id": "alice", "unit": UNIT})
            client.post("/v1/accounts", json={"id": "bob", "unit": UNIT})
            wait_for_feed(client, 3)
            second = run_example_feed(server.url, key, tmp_path / "cursor.txt")
            everything = [e["id"] for e in client.get("/v1/events").json()["items"]]

            # Webhooks: the example verifies the signature with the secret shown once. Its
            # port is found free only now, just before the example's receiver binds it.
            port = free_port()
            hook = client.post(
                "/v1/webhooks",
                json={"url": f"http://127.0.0.1:{port}/", "types": ["account.opened"]},
            ).json()
            receiver = example.receive_webhooks(port, hook["secret"], handled.append)
            thread = threading.Thread(target=receiver.serve_forever, daemon=True)
            thread.start()
            forged = httpx.post(
                f"http://127.0.0.1:{port}/",
                content=b'{"id":"x"}',
                headers={
                    "webhook-id": "x",
                    "webhook-timestamp": str(int(time.time())),
                    "webhook-signature": "v1,AAAA",
                },
            )
            client.post("/v1/accounts", json={"id": "carol", "unit": UNIT})
            deadline = time.monotonic() + WAIT_SECONDS
            while not handled:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            receiver.shutdown()
            receiver.server_close()

    assert first + second == everything  # nothing lost, nothing twice
    assert len(first) == 1
    assert forged.status_code == 400
    assert [event["data"]["account"]["id"] for event in handled] == ["carol"]  # type: ignore[index]
