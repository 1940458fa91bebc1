"""How long a PostgreSQL connection waits on a peer gone silent: every connection the
product opens (the library's pools, the events database's pool, kept connections, the
start-up check, the view sets' connections) takes libpq's keep-alive and
``tcp_user_timeout`` options from ``tcp_liveness``.

A server that vanishes without a reset (a cable pulled, a frozen machine, a dropped
route) leaves a statement waiting on its socket for as long as TCP retransmits, about
15 minutes: ``statement_timeout`` is the server's, and a server gone enforces nothing.
With these, the kernel gives the connection up after about ``timeout_seconds`` of
silence, and the use fails as a dropped connection does (decision 0026, fifteenth
session's addendum)."""

import math
from collections.abc import Mapping
from typing import Any, Final

from psycopg.conninfo import conninfo_to_dict, make_conninfo

# libpq's names, as a URL's query (``?keepalives_idle=…``) or a keyword argument gives them.
LIVENESS_KEYS: Final = (
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)
# The keep-alive probes sent into a silence before the connection is given up (where
# ``tcp_user_timeout`` is not enforced; where it is, Linux, it ends the probing).
KEEPALIVE_PROBES: Final = 5
# A silence shorter than this is not a lost peer (a busy server's scheduling, a GC).
SILENCE_SECONDS_MIN: Final = 2


# The library environment's key that carries a URL's own values (libpq's conninfo, empty
# where it sets none) from ``postgres_env`` to our factory's pool. One key, always set: a
# runner's environment holds the event store's keys and the views' (prefixed with the
# projection's name) together, and the library reads a key the views' set lacks from the
# event store's, so a value of the event store's URL the read model's did not set became
# the views' own.
LIVENESS_ENV_KEY: Final = "POSTGRES_TCP_LIVENESS"


def urls_liveness(query: Mapping[str, str]) -> str:
    """What ``LIVENESS_ENV_KEY`` holds for a URL whose query gives ``query``: those of
    ``LIVENESS_KEYS`` it sets, as a conninfo string ('' for none)."""
    return make_conninfo("", **{key: query[key] for key in LIVENESS_KEYS if key in query})


def tcp_liveness(timeout_seconds: float, given: str | Mapping[str, Any] = "") -> dict[str, Any]:
    """libpq's options that end a connection after about ``timeout_seconds`` (a store's
    timeout) without an answer from its peer: keep-alive probes after half of it idle,
    one a second, and ``tcp_user_timeout``, which also bounds data sent and never
    acknowledged. Those ``given`` sets itself (a URL's query, or options already chosen
    for a pool) are its own: theirs win."""
    silence_seconds = max(SILENCE_SECONDS_MIN, math.ceil(timeout_seconds))
    idle_seconds = math.ceil(silence_seconds / 2)
    options: dict[str, Any] = {
        "keepalives": 1,
        "keepalives_idle": idle_seconds,
        "keepalives_interval": max(1, (silence_seconds - idle_seconds) // KEEPALIVE_PROBES),
        "keepalives_count": KEEPALIVE_PROBES,
        "tcp_user_timeout": silence_seconds * 1000,
    }
    own = conninfo_to_dict(given) if isinstance(given, str) else given
    options.update({key: own[key] for key in LIVENESS_KEYS if own.get(key) is not None})
    return options
