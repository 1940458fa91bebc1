"""A small consumer of the ledger's public events: Python's standard library plus the
Standard Webhooks signature check (``pip install standardwebhooks``).

Follow the feed, storing the cursor after each page (a restart loses nothing and sees
nothing twice):

    python events_consumer.py feed --url http://127.0.0.1:8000 --key lk_… \
        --cursor-file cursor.txt [--types transfer.recorded,balance.threshold_crossed]

Receive webhooks, verifying every signature (the secret is the one `POST /v1/webhooks`
showed once):

    python events_consumer.py webhooks --port 9000 --secret whsec_…

Each event is printed as one JSON line; replace ``handle`` with your own logic, and
make it idempotent on the event's ``id`` (deliveries are at least once).
"""

import argparse
import json
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

LONG_POLL_SECONDS = 20
PAGE_LIMIT = 100


def handle(event: dict[str, Any]) -> None:
    print(json.dumps({"id": event["id"], "type": event["type"], "position": event["position"]}))
    sys.stdout.flush()


def fetch_page(url: str, key: str, after: str, types: str, wait_seconds: int) -> dict[str, Any]:
    query = {"after": after, "limit": PAGE_LIMIT, "wait_seconds": wait_seconds}
    if types:
        query["types"] = types
    request = urllib.request.Request(  # noqa: S310  # the ledger's own http(s) URL
        f"{url}/v1/events?{urllib.parse.urlencode(query)}",
        headers={"Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=wait_seconds + 30) as response:  # noqa: S310
        page: dict[str, Any] = json.load(response)
        return page


def follow_feed(
    url: str,
    key: str,
    cursor_file: Path,
    types: str = "",
    on_event: Callable[[dict[str, Any]], None] = handle,
    exit_when_idle: bool = False,
) -> None:
    after = cursor_file.read_text().strip() if cursor_file.exists() else ""
    while True:
        page = fetch_page(url, key, after, types, 0 if exit_when_idle else LONG_POLL_SECONDS)
        for event in page["items"]:
            on_event(event)
        # Only once the page is handled: a crash before this line replays the page.
        after = page["next_cursor"]
        temporary = cursor_file.with_suffix(".tmp")
        temporary.write_text(after)
        temporary.replace(cursor_file)
        if exit_when_idle and not page["items"]:
            return


def receive_webhooks(
    port: int, secret: str, on_event: Callable[[dict[str, Any]], None] = handle
) -> HTTPServer:
    verifier = Webhook(secret)

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            try:
                event = verifier.verify(body, dict(self.headers.items()))
            except WebhookVerificationError:
                self.send_response(400)  # forged, altered or stale: never handled
                self.end_headers()
                return
            on_event(event)
            self.send_response(204)  # acknowledged: the ledger moves on to the next event
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    return HTTPServer(("127.0.0.1", port), Receiver)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    feed = commands.add_parser("feed")
    feed.add_argument("--url", required=True)
    feed.add_argument("--key", required=True)
    feed.add_argument("--cursor-file", type=Path, required=True)
    feed.add_argument("--types", default="")
    feed.add_argument("--exit-when-idle", action="store_true")
    hooks = commands.add_parser("webhooks")
    hooks.add_argument("--port", type=int, required=True)
    hooks.add_argument("--secret", required=True)
    arguments = parser.parse_args()
    if arguments.command == "feed":
        follow_feed(
            arguments.url,
            arguments.key,
            arguments.cursor_file,
            arguments.types,
            exit_when_idle=arguments.exit_when_idle,
        )
    else:
        receive_webhooks(arguments.port, arguments.secret).serve_forever()


if __name__ == "__main__":
    main()
