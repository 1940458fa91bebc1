"""A port handed to a test's or a benchmark's server stays reserved until the server
binds it: no other process's search for a free port is given it, the server binds it
as servers do (with SO_REUSEADDR), and nothing answers on it before the server."""

import errno
import socket
from typing import Final

import pytest

from tests.support.ports import free_port, reserved_port


def plain_bind(port: int) -> None:
    """A bind as another process's probe or server without SO_REUSEADDR makes."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))


def assert_refused_to_others(port: int) -> None:
    with pytest.raises(OSError, match="in use") as refused:
        plain_bind(port)
    assert refused.value.errno == errno.EADDRINUSE


def test_a_port_handed_out_is_refused_to_anyone_binding_it_plainly() -> None:
    assert_refused_to_others(free_port())


def test_the_server_meant_for_the_port_binds_it_listens_and_is_answered() -> None:
    port = free_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            accepted, _ = server.accept()
            accepted.close()
    # Stopped, the server's port stays reserved for its restart.
    assert_refused_to_others(port)


def test_nothing_answers_on_a_reserved_port_before_its_server() -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", free_port()), timeout=5).close()


# Tries of ``test_a_port_reserved_for_a_block_is_let_go_after_it``: once let go, the port
# is anyone's, and another process's probe may take it before this test binds it; that
# it happened this many times in a row would say the block kept it.
LET_GO_TRIES: Final = 5


def test_a_port_reserved_for_a_block_is_let_go_after_it() -> None:
    taken_by_others = 0
    for _ in range(LET_GO_TRIES):
        with reserved_port() as port:
            assert_refused_to_others(port)
        try:
            plain_bind(port)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            taken_by_others += 1
        else:
            break
    assert taken_by_others < LET_GO_TRIES
