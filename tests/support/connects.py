"""Counting the PostgreSQL connections code under test opens."""

import math
import os
import socket
from dataclasses import dataclass
from typing import Any, Final

import psycopg
import pytest


def counting_connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection psycopg opens from now on (to the test's end), by the URL it was
    given."""
    opened: list[str] = []
    connect = psycopg.connect

    def counted(url: str, **options: Any) -> psycopg.Connection[Any]:
        opened.append(url)
        return connect(url, **options)

    monkeypatch.setattr(psycopg, "connect", counted)
    return opened


@dataclass(frozen=True)
class Liveness:
    """What the kernel holds for a client socket: whether keep-alive probes are on, the
    idle seconds before the first, the seconds between them, how many, and the
    milliseconds unacknowledged data may wait (``TCP_USER_TIMEOUT``; 0: TCP's own), and
    the database the connection is to."""

    keepalive: int
    idle_seconds: int
    interval_seconds: int
    probes: int
    user_timeout_ms: int
    database: str

    @property
    def silence_seconds_max(self) -> int:
        """How long a peer may stay silent before the connection is given up."""
        probing = self.idle_seconds + self.interval_seconds * self.probes
        if not self.keepalive:
            probing = UNBOUNDED_SECONDS
        if self.user_timeout_ms:
            return min(probing, math.ceil(self.user_timeout_ms / 1000))
        return probing


# Where neither keep-alives nor a user timeout are set: TCP's retransmissions, ~15 minutes.
UNBOUNDED_SECONDS: Final = 15 * 60


def liveness_of(connection: psycopg.Connection[Any]) -> Liveness:
    """The keep-alive settings of ``connection``'s socket, read from the kernel (a
    connection over TCP: the tests' servers listen on 127.0.0.1)."""
    with socket.socket(fileno=os.dup(connection.pgconn.socket)) as sock:
        assert sock.family in (socket.AF_INET, socket.AF_INET6), sock.family
        return Liveness(
            keepalive=sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            idle_seconds=sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            interval_seconds=sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            probes=sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            user_timeout_ms=sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            database=connection.info.dbname,
        )


def recording_liveness(monkeypatch: pytest.MonkeyPatch) -> list[Liveness]:
    """The socket settings of every connection psycopg opens from now on (to the test's
    end), ``psycopg.connect`` and the pools' alike, read as each is opened."""
    seen: list[Liveness] = []
    connect = psycopg.Connection.connect

    def recorded(
        cls: type[psycopg.Connection[Any]], /, conninfo: str = "", **options: Any
    ) -> psycopg.Connection[Any]:
        connection = connect.__func__(cls, conninfo, **options)  # type: ignore[attr-defined]
        seen.append(liveness_of(connection))
        return connection  # type: ignore[no-any-return]

    monkeypatch.setattr(psycopg.Connection, "connect", classmethod(recorded))
    monkeypatch.setattr(psycopg, "connect", psycopg.Connection.connect)
    return seen
