"""The supervisor of ``serve --workers N`` with real processes: toy workers that answer
each connection with their pid, so that a test sees which worker accepted it."""

import asyncio
import contextvars
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final, TypeVarTuple

import pytest

from app.worker_processes import (
    PING,
    SERVING,
    STARTUP_FAILURE,
    ListenError,
    WorkerProcesses,
    answer_pings,
    listening_sockets,
    readable,
)

WAIT_SECONDS: Final = 60.0  # a bound against hanging, never a measure of speed
CONNECTIONS: Final = 32

TOY_WORKER: Final = """
import os, signal, socket, sys, threading
from app.worker_processes import answer_pings
listener = socket.socket(fileno=int(sys.argv[1]))
control = socket.socket(fileno=int(sys.argv[2]))
stopping = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stopping.set())
if sys.argv[3] == "answers":
    answer_pings(control, lambda: True)
listener.settimeout(0.1)
while not stopping.is_set():
    try:
        connection, _ = listener.accept()
    except TimeoutError:
        continue
    with connection:
        connection.sendall(str(os.getpid()).encode())
"""


def toy_worker(mode: str = "answers") -> Callable[[int, int], Sequence[str]]:
    def command(listen_fd: int, control_fd: int) -> list[str]:
        return [sys.executable, "-c", TOY_WORKER, str(listen_fd), str(control_fd), mode]

    return command


def exits_with(code: int) -> Callable[[int, int], Sequence[str]]:
    def command(_listen_fd: int, _control_fd: int) -> list[str]:
        return [sys.executable, "-c", f"raise SystemExit({code})"]

    return command


@contextmanager
def supervising(supervisor: WorkerProcesses) -> Iterator[threading.Thread]:
    """``run`` outside the main thread (no signal handlers there: stop() ends it)."""
    supervisor_thread = threading.Thread(target=supervisor.run_without_signals, daemon=True)
    supervisor_thread.start()
    try:
        yield supervisor_thread
    finally:
        supervisor.stopping.set()
        supervisor_thread.join(WAIT_SECONDS)


def answering_pid(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS) as connection:
        return int(connection.recv(64))


def run_to_its_end(supervisor: WorkerProcesses) -> bool:
    """``run_without_signals`` within a bound: a supervisor still running past it is
    stopped and fails the test, rather than hanging the suite."""
    ended: list[bool] = []
    running = threading.Thread(
        target=lambda: ended.append(supervisor.run_without_signals()), daemon=True
    )
    running.start()
    running.join(WAIT_SECONDS)
    if running.is_alive():
        supervisor.stopping.set()
        running.join(WAIT_SECONDS)
        pytest.fail("the supervisor never ended by itself")
    return ended[0]


def serving(supervisor: WorkerProcesses, count: int) -> bool:
    workers = list(supervisor.workers)
    return len(workers) == count and all(worker.serving for worker in workers)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_sockets_share_one_port_each_a_socket_of_its_own_with_reuseport() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 3)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(ports) == 1
        assert len({sock.fileno() for sock in sockets}) == 3
        for sock in sockets:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    finally:
        for sock in sockets:
            sock.close()


def test_an_address_another_server_listens_on_is_refused() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(ListenError, match=r"cannot listen on 127\.0\.0\.1"):
            listening_sockets("127.0.0.1", other.getsockname()[1], 2)


def test_a_second_group_on_the_same_port_is_refused_rather_than_joined() -> None:
    first = listening_sockets("127.0.0.1", 0, 2)
    try:
        with pytest.raises(ListenError):
            listening_sockets("127.0.0.1", first[0].getsockname()[1], 2)
    finally:
        for sock in first:
            sock.close()


def test_connections_reach_every_worker_through_its_own_socket() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 2)
    port = sockets[0].getsockname()[1]
    supervisor = WorkerProcesses(sockets, toy_worker(), stop_seconds=WAIT_SECONDS)
    with supervising(supervisor):
        wait_until(lambda: serving(supervisor, 2), "the workers never started")
        pids = {answering_pid(port) for _ in range(CONNECTIONS)}
        assert pids == {worker.process.pid for worker in supervisor.workers}


def test_a_killed_worker_is_replaced_and_connections_queued_on_its_socket_are_answered() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 2)
    port = sockets[0].getsockname()[1]
    supervisor = WorkerProcesses(sockets, toy_worker(), stop_seconds=WAIT_SECONDS)
    with supervising(supervisor):
        wait_until(lambda: serving(supervisor, 2), "the workers never started")
        first = [worker.process.pid for worker in supervisor.workers]
        os.kill(first[0], signal.SIGKILL)
        # Connections made while it is dead wait in its socket's queue (the supervisor
        # keeps the socket) and its replacement answers them: none is refused.
        pids = {answering_pid(port) for _ in range(CONNECTIONS)}
        replacement = supervisor.workers[0].process.pid
        assert replacement != first[0]
        assert pids == {replacement, first[1]}


def test_a_worker_that_stops_answering_pings_is_killed_and_replaced() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 1)
    supervisor = WorkerProcesses(
        sockets, toy_worker("silent"), stop_seconds=WAIT_SECONDS, healthcheck_seconds=0.5
    )
    with supervising(supervisor):
        wait_until(lambda: len(supervisor.workers) == 1, "the worker never started")
        silent = supervisor.workers[0].process
        wait_until(lambda: silent.poll() is not None, "the silent worker was never killed")
        assert silent.returncode == -signal.SIGKILL
        wait_until(lambda: supervisor.workers[0].process is not silent, "it was never replaced")


def test_a_worker_that_fails_to_start_stops_the_server() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 2)
    supervisor = WorkerProcesses(sockets, exits_with(STARTUP_FAILURE), stop_seconds=WAIT_SECONDS)
    assert run_to_its_end(supervisor) is False
    assert all(sock.fileno() == -1 for sock in sockets)


def test_stopping_drains_every_worker_and_closes_the_sockets() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 2)
    supervisor = WorkerProcesses(sockets, toy_worker(), stop_seconds=WAIT_SECONDS)
    with supervising(supervisor) as supervisor_thread:
        wait_until(lambda: serving(supervisor, 2), "the workers never started")
        processes = [worker.process for worker in supervisor.workers]
    assert not supervisor_thread.is_alive()
    # SIGTERM, not a kill: each toy worker left its loop and exited with status 0.
    assert [process.returncode for process in processes] == [0, 0]
    assert all(sock.fileno() == -1 for sock in sockets)


def test_a_worker_whose_supervisor_is_gone_stops_by_itself() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 1)
    supervisor_end, worker_end = socket.socketpair()
    listen_fd = sockets[0].fileno()
    with worker_end:
        worker = subprocess.Popen(
            toy_worker()(listen_fd, worker_end.fileno()), pass_fds=(listen_fd, worker_end.fileno())
        )
    try:
        supervisor_end.settimeout(WAIT_SECONDS)
        supervisor_end.sendall(b"?")
        assert supervisor_end.recv(1)  # it answers while the supervisor lives
        supervisor_end.close()  # what the kernel does when the supervisor dies
        assert worker.wait(WAIT_SECONDS) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        sockets[0].close()


# A toy writer process (decision 0035): answers pings and, on SIGTERM, notes how many
# toy workers of its supervisor were still running then.
TOY_WRITER: Final = """
import os, signal, socket, sys, threading
from pathlib import Path
from app.worker_processes import answer_pings
control = socket.socket(fileno=int(sys.argv[1]))
stopping = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stopping.set())
if sys.argv[2] == "exits":
    raise SystemExit(1)
answer_pings(control, lambda: True)
stopping.wait()
def toy_worker(entry):
    try:
        stat = (entry / "stat").read_text()
        command = (entry / "cmdline").read_bytes()
    except OSError:
        return False
    ppid = int(stat.rsplit(")", 1)[1].split()[1])
    return ppid == os.getppid() and b"listener.accept" in command and entry.name != str(os.getpid())
running = [e for e in Path("/proc").iterdir() if e.name.isdigit() and toy_worker(e)]
if len(sys.argv) > 3:
    Path(sys.argv[3]).write_text(f"workers running: {len(running)}")
"""


def toy_writer(mode: str, note: str = "") -> Callable[[int], Sequence[str]]:
    def command(control_fd: int) -> list[str]:
        return [sys.executable, "-c", TOY_WRITER, str(control_fd), mode, note]

    return command


def test_the_writer_serves_before_any_worker_starts_and_a_killed_one_is_replaced() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 2)
    supervisor = WorkerProcesses(
        sockets, toy_worker(), stop_seconds=WAIT_SECONDS, writer=toy_writer("serves")
    )
    with supervising(supervisor):
        wait_until(lambda: serving(supervisor, 3), "the workers and the writer never started")
        writer = supervisor.workers[2]
        # Started first: it was serving before the workers' processes existed.
        assert writer.started_at < min(w.started_at for w in supervisor.workers[:2])
        os.kill(writer.process.pid, signal.SIGKILL)
        wait_until(
            lambda: (
                supervisor.workers[2].process is not writer.process
                and supervisor.workers[2].serving
            ),
            "the writer was never replaced",
        )


def test_a_writer_that_cannot_start_stops_the_server_before_any_worker_starts() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 2)
    supervisor = WorkerProcesses(
        sockets, toy_worker(), stop_seconds=WAIT_SECONDS, writer=toy_writer("exits")
    )
    assert run_to_its_end(supervisor) is False
    assert supervisor.workers == []  # no worker was started for a server with no writer
    assert all(sock.fileno() == -1 for sock in sockets)


def test_the_writer_is_stopped_after_every_worker_has_drained(tmp_path: Path) -> None:
    note = tmp_path / "writer-stopped"
    sockets = listening_sockets("127.0.0.1", 0, 2)
    supervisor = WorkerProcesses(
        sockets, toy_worker(), stop_seconds=WAIT_SECONDS, writer=toy_writer("serves", str(note))
    )
    with supervising(supervisor):
        wait_until(lambda: serving(supervisor, 3), "the workers and the writer never started")
        writer = supervisor.workers[2].process
    # The workers' last writes are the writer's to answer: it is asked to stop only
    # once none of them runs any more.
    assert writer.returncode == 0
    assert note.read_text() == "workers running: 0"


Arguments = TypeVarTuple("Arguments")


class HandOffsSeen(asyncio.SelectorEventLoop):
    """An event loop that says when a callback was handed to it from another thread."""

    def __init__(self) -> None:
        super().__init__()
        self.handed = threading.Event()

    def call_soon_threadsafe(
        self,
        callback: Callable[[*Arguments], object],
        *args: *Arguments,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = super().call_soon_threadsafe(callback, *args, context=context)
        self.handed.set()
        return handle


def test_pings_answered_from_a_loop_go_unanswered_while_that_loop_is_wedged() -> None:
    """The writer process answers its pings from its event loop (decision 0035): one whose
    loop is wedged falls silent, and the supervisor's health check replaces it (a thread
    answering for it would keep a wedged writer forever)."""
    loop = HandOffsSeen()
    looping = threading.Thread(target=loop.run_forever, daemon=True)
    looping.start()
    supervisor_end, worker_end = socket.socketpair()
    supervisor_end.settimeout(WAIT_SECONDS)
    wedged, told_to_stop = threading.Event(), threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: told_to_stop.set())
    pings = answer_pings(worker_end, lambda: True, loop)
    try:
        supervisor_end.sendall(PING)
        assert supervisor_end.recv(1) == SERVING
        loop.call_soon_threadsafe(wedged.wait)  # a callback that does not return
        loop.handed.clear()
        supervisor_end.sendall(PING)
        assert loop.handed.wait(WAIT_SECONDS)  # the ping was read and handed to the loop,
        assert not readable(supervisor_end)  # which, wedged, has not answered it
        wedged.set()
        assert supervisor_end.recv(1) == SERVING  # answered once the loop runs again
    finally:
        wedged.set()
        # The supervisor gone: the process is told to stop, as from a thread (here,
        # into this test's handler, restored only once it ran).
        supervisor_end.close()
        pings.join(WAIT_SECONDS)
        stopped = told_to_stop.wait(WAIT_SECONDS)
        signal.signal(signal.SIGTERM, previous)
        loop.call_soon_threadsafe(loop.stop)
        looping.join(WAIT_SECONDS)
        loop.close()
        worker_end.close()
    assert stopped


# An API worker as ``serve-worker`` serves (uvicorn's server as it supervises it, given
# the control socket), with a toy app whose every request wedges the event loop: a blocking wait
# that never returns, as a callback stuck in a loop would.
WEDGING_WORKER: Final = """
import socket, sys, threading
import uvicorn
from app.worker_processes import SupervisedServer
listener = socket.socket(fileno=int(sys.argv[1]))
control = socket.socket(fileno=int(sys.argv[2]))

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    threading.Event().wait()

config = uvicorn.Config(app, log_config=None, lifespan="on")
SupervisedServer(config, control=control).run(sockets=[listener])
"""


# The health check of that test: longer than the toy worker takes to start and serve
# (it answers no ping before its loop runs), short enough to be waited for.
WEDGE_NOTICED_SECONDS: Final = 5.0


def wedging_worker(listen_fd: int, control_fd: int) -> list[str]:
    return [sys.executable, "-c", WEDGING_WORKER, str(listen_fd), str(control_fd)]


def test_an_api_worker_whose_event_loop_is_wedged_is_killed_and_replaced() -> None:
    """An API worker answers its pings from the event loop that serves its requests: one
    whose loop is wedged falls silent and is replaced (a thread answering for it kept it
    "serving" for ever, every request on its socket unanswered)."""
    sockets = listening_sockets("127.0.0.1", 0, 1)
    port = sockets[0].getsockname()[1]
    supervisor = WorkerProcesses(
        sockets,
        wedging_worker,
        stop_seconds=WAIT_SECONDS,
        healthcheck_seconds=WEDGE_NOTICED_SECONDS,
    )
    with supervising(supervisor):
        wait_until(lambda: serving(supervisor, 1), "the worker never served")
        wedged = supervisor.workers[0].process
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS) as connection:
            connection.sendall(b"GET / HTTP/1.1\r\nHost: ledger\r\n\r\n")
            wait_until(lambda: wedged.poll() is not None, "the wedged worker was never killed")
        assert wedged.returncode == -signal.SIGKILL
        wait_until(
            lambda: supervisor.workers[0].process is not wedged and supervisor.workers[0].serving,
            "it was never replaced",
        )
