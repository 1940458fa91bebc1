"""Webhooks against real local HTTP receivers: Standard Webhooks signatures, order,
retries with growing delays, recovery, timeouts, isolation between endpoints,
disabling, replay, and bad input refused with nothing stored."""

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from app.settings import Settings
from app.webhooks.delivery import RETRY_JITTER_MIN
from tests.api.helpers import Client, Json, assert_problem, fund, ok, open_account, open_issuer
from tests.support.receiver import Received, Receiver

RETRY_BASE_SECONDS = 0.1
FAILURES_MAX = 6
# Long enough that a loaded machine never times out a delivery the receiver answers at
# once (a spurious retry is a second delivery); a receiver that should time out takes
# twice as long.
DELIVERY_TIMEOUT_SECONDS = 2.0
TIMED_OUT_ANSWER_SECONDS = 2 * DELIVERY_TIMEOUT_SECONDS
# A slow receiver's answer: nine deliveries to it in turn take at least eight of these.
SLOW_ANSWER_SECONDS = 1.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Short back-off and timeouts so retries happen in test time, never hours.
    return Settings(
        data_dir=tmp_path,
        read_wait_seconds=5.0,
        log_format="console",
        webhook_timeout_seconds=DELIVERY_TIMEOUT_SECONDS,
        webhook_retry_base_seconds=RETRY_BASE_SECONDS,
        webhook_retry_cap_seconds=0.8,
        webhook_failures_max=FAILURES_MAX,
    )


def add_webhook(client: Client, url: str, types: list[str] | None = None) -> Json:
    body: Json = {"url": url, "description": "test"}
    if types is not None:
        body["types"] = types
    return ok(client.post("/v1/webhooks", json=body), 201)


def event_ids(received: list[Received]) -> list[str]:
    return [json.loads(item.body)["id"] for item in received]


def test_deliveries_are_signed_in_order_and_verify_with_the_reference_check(
    client: Client,
) -> None:
    with Receiver() as receiver:
        hook = add_webhook(client, receiver.url, ["transfer.recorded"])
        open_issuer(client)
        open_account(client, "alice")
        for n in range(5):
            fund(client, "alice", n + 1, f"t{n}")

        assert receiver.wait_for(lambda got: len(got) >= 5)
        time.sleep(0.2)  # nothing more may come

    received = receiver.received
    assert len(received) == 5
    verifier = Webhook(hook["secret"])
    payloads = [verifier.verify(item.body, item.headers) for item in received]
    assert [p["data"]["transfer"]["id"] for p in payloads] == [f"t{n}" for n in range(5)]
    assert [item.headers["webhook-id"] for item in received] == [p["id"] for p in payloads]
    assert all(p["type"] == "transfer.recorded" for p in payloads)
    assert hook["secret"].startswith("whsec_")
    # The secret is shown once: never again in a read or a list.
    assert "secret" not in ok(client.get(f"/v1/webhooks/{hook['id']}"))
    assert all("secret" not in item for item in ok(client.get("/v1/webhooks"))["items"])
    deliveries = ok(client.get(f"/v1/webhooks/{hook['id']}/deliveries"))["items"]
    assert [d["status"] for d in deliveries] == ["delivered"] * 5
    assert all(d["response_status"] == 200 and d["attempts"] == 1 for d in deliveries)
    assert all(d["latency_ms"] is not None and d["latency_ms"] >= 0 for d in deliveries)


def test_a_failing_receiver_gets_retries_with_growing_delays_and_everything_later(
    client: Client,
) -> None:
    failures = 4
    with Receiver(lambda n: (500 if n < failures else 204, 0.0)) as receiver:
        hook = add_webhook(client, receiver.url, ["account.opened"])
        open_issuer(client)
        open_account(client, "alice")
        open_account(client, "bob")

        assert receiver.wait_for(lambda got: len(got) >= failures + 3)
        time.sleep(0.3)

    ids = event_ids(receiver.received)
    # The first event is tried until it passes, then the others follow, each once.
    assert len(set(ids[: failures + 1])) == 1
    assert len(ids) == failures + 3
    assert len(set(ids)) == 3
    times = [item.at for item in receiver.received[: failures + 1]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # Each wait at least its share of a doubling delay (jitter takes off a quarter at
    # most): a wait's least is 1.5 times the previous wait's most, so the waits grow.
    # A loaded machine only lengthens a gap, so lower bounds are all that is checked.
    least = [RETRY_JITTER_MIN * RETRY_BASE_SECONDS * 2**number for number in range(failures)]
    assert all(gap >= bound for gap, bound in zip(gaps, least, strict=True)), (gaps, least)
    first = ok(client.get(f"/v1/webhooks/{hook['id']}/deliveries"))["items"][-1]
    assert first["attempts"] == failures + 1
    assert first["status"] == "delivered"
    assert first["response_status"] == 204
    assert ok(client.get(f"/v1/webhooks/{hook['id']}"))["failures"] == 0


def test_a_receiver_that_times_out_is_retried_like_a_failure(client: Client) -> None:
    with Receiver(lambda n: (200, TIMED_OUT_ANSWER_SECONDS if n == 0 else 0.0)) as receiver:
        hook = add_webhook(client, receiver.url, ["account.opened"])
        open_issuer(client)

        assert receiver.wait_for(lambda got: len(got) >= 2)
        time.sleep(0.2)

    assert event_ids(receiver.received)[0] == event_ids(receiver.received)[1]
    delivery = ok(client.get(f"/v1/webhooks/{hook['id']}/deliveries"))["items"][0]
    assert delivery["attempts"] == 2
    assert delivery["status"] == "delivered"


def test_a_receiver_that_is_down_gets_everything_once_it_is_back(client: Client) -> None:
    receiver = Receiver()  # its port bound, not yet listened on: connections are refused
    hook = add_webhook(client, receiver.url, ["account.opened"])
    open_issuer(client)
    open_account(client, "alice")
    deadline = time.monotonic() + 10
    while ok(client.get(f"/v1/webhooks/{hook['id']}"))["failures"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    with receiver:
        assert receiver.wait_for(lambda got: len(got) >= 2)
        time.sleep(0.3)

    payloads = [json.loads(body) for body in receiver.bodies()]
    assert [p["data"]["account"]["id"] for p in payloads] == ["system:issuance", "alice"]
    refused = ok(client.get(f"/v1/webhooks/{hook['id']}/deliveries"))["items"][-1]
    assert refused["attempts"] >= 3
    assert refused["status"] == "delivered"


def test_a_slow_endpoint_does_not_delay_another(client: Client) -> None:
    with (
        Receiver(lambda _: (200, SLOW_ANSWER_SECONDS)) as slow,
        Receiver() as fast,
    ):
        add_webhook(client, slow.url, ["account.opened"])
        add_webhook(client, fast.url, ["account.opened"])
        open_issuer(client)
        for n in range(8):
            open_account(client, f"user:{n}")

        started = time.monotonic()
        assert fast.wait_for(lambda got: len(got) >= 9, timeout=10)
        fast_done = time.monotonic() - started
        slow_so_far = len(slow.received)

    # Sooner than deliveries in turn with the slow one could have been, which was still
    # working through its queue.
    assert fast_done < 8 * SLOW_ANSWER_SECONDS
    assert slow_so_far < 9


def test_an_endpoint_that_keeps_failing_is_disabled_and_an_event_says_so(
    client: Client,
) -> None:
    with Receiver(lambda _: (503, 0.0)) as receiver, Receiver() as watcher:
        hook = add_webhook(client, receiver.url, ["account.opened"])
        add_webhook(client, watcher.url, ["webhook.disabled"])
        open_issuer(client)

        assert watcher.wait_for(lambda got: len(got) >= 1)
        tries = len(receiver.received)
        time.sleep(0.5)
        assert len(receiver.received) == tries  # no more tries once disabled

    assert tries == FAILURES_MAX
    notice = json.loads(watcher.received[0].body)
    assert notice["type"] == "webhook.disabled"
    assert notice["data"]["webhook_id"] == hook["id"]
    assert notice["data"]["failures"] == FAILURES_MAX
    endpoint = ok(client.get(f"/v1/webhooks/{hook['id']}"))
    assert endpoint["status"] == "disabled"
    assert endpoint["last_error"] == "HTTP 503"
    delivery = ok(client.get(f"/v1/webhooks/{hook['id']}/deliveries"))["items"][0]
    assert delivery["status"] == "abandoned"
    feed = ok(client.get("/v1/events", params={"types": "webhook.disabled"}))["items"]
    assert [event["id"] for event in feed] == [notice["id"]]
    # Operators see it on /metrics and /v1/ready (a failing receiver is not our outage).
    metrics = client.get("/metrics").text
    assert "ledger_webhook_endpoints_disabled 1.0" in metrics
    assert f'ledger_webhook_attempts_total{{outcome="failed"}} {FAILURES_MAX}.0' in metrics
    assert "ledger_feed_lag_positions" in metrics
    readiness = client.get("/v1/ready").json()
    assert readiness["events"]["webhook_endpoints_disabled"] == 1
    assert readiness["events"]["webhook_attempts_failed"] == FAILURES_MAX
    supervised = {worker["name"]: worker["up"] for worker in readiness["workers"]}
    assert supervised["feed_projector"] is True
    assert supervised["webhook_deliveries"] is True


def test_re_enabling_a_disabled_endpoint_delivers_what_was_missed(client: Client) -> None:
    healthy = False
    with Receiver(lambda _: (200 if healthy else 500, 0.0)) as receiver:
        hook = add_webhook(client, receiver.url, ["account.opened"])
        open_issuer(client)
        deadline = time.monotonic() + 10
        while ok(client.get(f"/v1/webhooks/{hook['id']}"))["status"] != "disabled":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        open_account(client, "alice")
        healthy = True

        ok(client.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": True}))
        assert receiver.wait_for(
            lambda got: (
                [json.loads(g.body)["data"]["account"]["id"] for g in got][-2:]
                == ["system:issuance", "alice"]
            )
        )


def test_replay_delivers_again_from_a_position(client: Client) -> None:
    with Receiver() as receiver:
        hook = add_webhook(client, receiver.url, ["account.opened"])
        open_issuer(client)
        alice = open_account(client, "alice")
        open_account(client, "bob")
        assert receiver.wait_for(lambda got: len(got) >= 3)

        ok(
            client.post(
                f"/v1/webhooks/{hook['id']}/replay",
                json={"after_position": alice["position"] - 1},
            )
        )
        assert receiver.wait_for(lambda got: len(got) >= 5)
        time.sleep(0.2)

    ids = event_ids(receiver.received)
    assert len(ids) == 5
    assert ids[3:] == ids[1:3]  # alice and bob again, same ids, same order


def test_update_and_delete(client: Client) -> None:
    hook = add_webhook(client, "https://example.com/a")
    changed = ok(
        client.patch(
            f"/v1/webhooks/{hook['id']}",
            json={"url": "https://example.com/b", "types": ["account.closed"]},
        )
    )
    assert (changed["url"], changed["types"]) == ("https://example.com/b", ["account.closed"])
    assert client.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
    assert_problem(client.get(f"/v1/webhooks/{hook['id']}"), 404, "webhook_not_found")
    assert_problem(client.delete(f"/v1/webhooks/{hook['id']}"), 404, "webhook_not_found")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"url": "ftp://example.com/x"}, 422, "validation_error"),
        ({"url": "example.com/x"}, 422, "validation_error"),
        ({"url": "http://"}, 422, "validation_error"),
        ({"url": "http://user:pw@example.com/"}, 422, "validation_error"),
        ({"url": "http://example.com:99999/"}, 422, "validation_error"),
        ({"url": "https://example.com/" + "x" * 3000}, 422, "validation_error"),
        (
            {"url": "https://example.com/", "types": ["transfer.exploded"]},
            422,
            "unknown_event_type",
        ),
        (
            {"url": "https://example.com/", "types": ["account.opened"] * 50},
            422,
            "validation_error",
        ),
        ({"url": "https://example.com/", "secret": "mine"}, 422, "validation_error"),
        ({"url": 42}, 422, "validation_error"),
    ],
)
def test_bad_webhooks_are_refused_and_nothing_is_stored(
    client: Client, body: dict[str, Any], status: int, code: str
) -> None:
    assert_problem(client.post("/v1/webhooks", json=body), status, code)
    assert ok(client.get("/v1/webhooks"))["items"] == []


def test_webhooks_need_an_admin_key(client: Client, keys: dict[str, str]) -> None:
    for scope in ("read", "write"):
        headers = {"Authorization": f"Bearer {keys[scope]}"}
        refused = client.post("/v1/webhooks", json={"url": "https://example.com/"}, headers=headers)
        assert_problem(refused, 403, "forbidden")
        assert_problem(client.get("/v1/webhooks", headers=headers), 403, "forbidden")
    assert ok(client.get("/v1/webhooks"))["items"] == []


def test_unknown_webhooks_are_404(client: Client) -> None:
    for path in ("/v1/webhooks/wh_nope", "/v1/webhooks/wh_nope/deliveries"):
        assert_problem(client.get(path), 404, "webhook_not_found")
    replay = client.post("/v1/webhooks/wh_nope/replay", json={"after_position": 0})
    assert_problem(replay, 404, "webhook_not_found")
