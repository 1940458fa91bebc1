"""``ledger serve --workers N``: N API processes, each accepting from a listening socket
of its own (decision 0029).

All N sockets are bound to the same address with ``SO_REUSEPORT``, so the kernel hashes
each new connection to one of them: the processes no longer race to accept from one
shared socket (where the first awake took every pending connection, 6 of 8 clients or
44 of 64). The supervisor (the parent) creates the sockets, keeps them open for its
whole life and hands socket ``i`` to worker ``i``: a worker that dies leaves its socket,
and the connections already queued on it, to its replacement, and the group of sockets
the kernel hashes over never changes while the server runs.

The supervisor starts each worker as a fresh ``ledger serve-worker`` process (no fork of
a process holding connections or threads), restarts one that exits or stops answering
its pings, stops everything when a worker fails to start (the same failure would follow
every restart), and on SIGTERM or SIGINT closes its copies of the sockets and drains the
workers (uvicorn's graceful shutdown in each), killing what is left past a bound.
"""

import asyncio
import contextlib
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import structlog
import uvicorn

log = structlog.get_logger(__name__)

# What a worker answers to a ping: still starting, or serving.
PING: Final = b"?"
STARTING: Final = b"s"
SERVING: Final = b"r"
# uvicorn's exit status for a worker whose app or socket could not start (uvicorn.config
# STARTUP_FAILURE); the ledger's own commands exit 3 when a store fails (EXIT_STORE_FAILED).
STARTUP_FAILURE: Final = 3
CHECK_INTERVAL_SECONDS: Final = 0.5
# A worker that has not answered a ping within this is killed and replaced. Generous:
# a worker still importing the app on a busy machine answers only once it runs.
HEALTHCHECK_SECONDS: Final = 60.0
# A worker that dies sooner than this after its start is restarted after a pause that
# doubles up to the cap (a worker crashing at once must not spin the machine).
RESTART_PAUSE_INITIAL_SECONDS: Final = 0.5
RESTART_PAUSE_MAX_SECONDS: Final = 10.0
HEALTHY_AFTER_SECONDS: Final = 30.0
# How often the supervisor looks at a starting writer process.
WRITER_START_CHECK_SECONDS: Final = 0.05
BACKLOG: Final = 2048  # uvicorn's default


class ListenError(OSError):
    """The address cannot be listened on (in use, not ours, no such interface)."""


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets listening on ``host:port`` with ``SO_REUSEPORT`` (port 0: one
    free port, shared by all). Refuses an address that something else already listens
    on, including another ledger's group of sockets (which ``SO_REUSEPORT`` alone would
    let us silently join, taking half its connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port != 0:
        # A socket without SO_REUSEPORT cannot bind beside any listener on the port.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                raise ListenError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(BACKLOG)
    except OSError as error:
        for sock in sockets:
            sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return sockets


def answer_pings(
    control: socket.socket,
    serving: Callable[[], bool],
    loop: asyncio.AbstractEventLoop | None = None,
) -> threading.Thread:
    """In a worker: answer each of the supervisor's pings (serving or still starting),
    from a thread of its own, or with ``loop`` from that event loop: a process whose loop
    is wedged (a callback that never returns) then answers nothing, and the supervisor's
    health check replaces it as it replaces one that is gone. When the supervisor is
    gone (its end closed, whatever killed it), the worker stops as on SIGTERM, draining
    its requests."""

    def reply() -> None:
        # On the loop, which must never block: a full socket (a supervisor that stopped
        # reading) loses the answer, as a silent process would.
        with contextlib.suppress(OSError):
            control.send(SERVING if serving() else STARTING, socket.MSG_DONTWAIT)

    def answer() -> None:
        while True:
            try:
                asked = control.recv(64)
                if asked:
                    if loop is None:
                        control.sendall(SERVING if serving() else STARTING)
                    else:
                        loop.call_soon_threadsafe(reply)
                    continue
            except OSError:
                pass
            except RuntimeError:  # the loop is closed: the process is ending
                return
            os.kill(os.getpid(), signal.SIGTERM)
            return

    thread = threading.Thread(target=answer, name="supervisor-pings", daemon=True)
    thread.start()
    return thread


class SupervisedServer(uvicorn.Server):
    """uvicorn's server, which with ``control`` (an API worker of ``serve --workers
    N``) answers its supervisor's pings from the event loop that serves, as the writer
    process does: a worker whose loop is wedged falls silent and is replaced, where a
    thread answering for it kept it "serving" for ever, its requests unanswered."""

    def __init__(self, config: uvicorn.Config, *, control: socket.socket | None = None) -> None:
        super().__init__(config)
        self.control = control

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if self.control is not None:
            answer_pings(self.control, lambda: self.started, asyncio.get_running_loop())
        await super().serve(sockets)


@dataclass
class Worker:
    index: int
    process: "subprocess.Popen[bytes]"
    control: socket.socket  # the supervisor's end of the worker's socket pair
    started_at: float
    answered_at: float
    serving: bool = False


# The command that starts worker ``index`` given its listening socket's and its control
# socket's file descriptors.
WorkerCommand = Callable[[int, int], Sequence[str]]
# The command that starts the writer process given its control socket's file descriptor.
WriterCommand = Callable[[int], Sequence[str]]


class WorkerProcesses:
    """The supervisor of the API worker processes (``run`` in the main thread), and of
    their writer process when there is one (decision 0035): started first and serving
    before the workers start, restarted like them, stopped after them (their last
    writes are its to answer)."""

    def __init__(
        self,
        sockets: Sequence[socket.socket],
        command: WorkerCommand,
        *,
        stop_seconds: float,
        healthcheck_seconds: float = HEALTHCHECK_SECONDS,
        writer: WriterCommand | None = None,
    ) -> None:
        self.sockets = list(sockets)
        self.command = command
        self.writer = writer
        self.stop_seconds = stop_seconds
        self.healthcheck_seconds = healthcheck_seconds
        self.stopping = threading.Event()
        # The API workers, by index, then the writer (index ``len(sockets)``) if any.
        self.workers: list[Worker] = []
        self.failed_to_start = False
        self._slots = len(self.sockets) + (writer is not None)
        self._pauses = [RESTART_PAUSE_INITIAL_SECONDS] * self._slots
        self._restart_at: dict[int, float] = {}
        self._all_serving_said = False

    def run(self) -> bool:
        """Serve until SIGTERM or SIGINT, then drain. False when a worker could not
        start (everything is stopped then too)."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            return self.run_without_signals()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def run_without_signals(self) -> bool:
        """``run`` for a caller that sets ``stopping`` itself."""
        try:
            log.info("workers.starting", pid=os.getpid(), workers=len(self.sockets))
            writer = self._writer_serving()
            if self.failed_to_start or self.stopping.is_set():
                return not self.failed_to_start
            self.workers = [self._start(index) for index in range(len(self.sockets))]
            if writer is not None:
                self.workers.append(writer)
            while not self.stopping.wait(CHECK_INTERVAL_SECONDS):
                self.check()
        finally:
            self.stop()
        return not self.failed_to_start

    def _writer_serving(self) -> Worker | None:
        """Start the writer, if there is one, and wait until it serves: a writer that
        ends or stays silent before that would do the same at every restart."""
        if self.writer is None:
            return None
        writer = self._start(len(self.sockets))
        while not writer.serving:
            if self.stopping.wait(WRITER_START_CHECK_SECONDS):
                self._stop_each([writer], time.monotonic() + self.stop_seconds)
                return None
            now = time.monotonic()
            code = writer.process.poll()
            if code is None and self._answered(writer, now):
                continue
            log.error("workers.writer_failed_to_start", pid=writer.process.pid, exit_code=code)
            self.failed_to_start = True
            self._stop_each([writer], now)
            return None
        return writer

    def check(self) -> None:
        now = time.monotonic()
        for index, worker in enumerate(self.workers):
            if index in self._restart_at:
                if now >= self._restart_at[index]:
                    del self._restart_at[index]
                    self.workers[index] = self._start(index)
                continue
            code = worker.process.poll()
            if code is None and self._answered(worker, now):
                continue
            if code is None:
                log.warning(
                    "workers.unresponsive",
                    pid=worker.process.pid,
                    silent_seconds=round(now - worker.answered_at, 1),
                )
                worker.process.kill()
                code = worker.process.wait()
            worker.control.close()
            if code == STARTUP_FAILURE and not self._all_serving_said:
                # Before the server ever served, the same failure would follow every
                # restart (a broken store or app); later it may pass (a store away).
                log.error("workers.failed_to_start", pid=worker.process.pid, exit_code=code)
                self.failed_to_start = True
                self.stopping.set()
                return
            pause = self._next_pause(index, now - worker.started_at)
            # "died" is what uvicorn's supervisor said: operators' alerts may match it.
            log.warning(
                f"Child process [{worker.process.pid}] died",
                exit_code=code,
                restart_in_seconds=pause,
            )
            self._restart_at[index] = now + pause

    def stop(self) -> None:
        """Close the listening sockets, SIGTERM every worker, wait for each to drain up
        to ``stop_seconds`` in all, then kill what is left; then the writer likewise."""
        self.stopping.set()
        for sock in self.sockets:
            sock.close()
        running = [w for i, w in enumerate(self.workers) if i not in self._restart_at]
        api = [w for w in running if w.index < len(self.sockets)]
        self._stop_each(api, time.monotonic() + self.stop_seconds)
        writer = [w for w in running if w.index == len(self.sockets)]
        self._stop_each(writer, time.monotonic() + self.stop_seconds)
        self._restart_at.clear()
        log.info("workers.stopped", pid=os.getpid())

    def _stop_each(self, running: Sequence[Worker], deadline: float) -> None:
        for worker in running:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        for worker in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            if worker.process.poll() is None:
                log.error("workers.killed_at_stop", pid=worker.process.pid)
                worker.process.kill()
                worker.process.wait()
            worker.control.close()

    def _on_signal(self, *_: object) -> None:
        self.stopping.set()

    def _start(self, index: int) -> Worker:
        mine, theirs = socket.socketpair()
        if index < len(self.sockets):
            listen_fd = self.sockets[index].fileno()
            argv = list(self.command(listen_fd, theirs.fileno()))
            fds: tuple[int, ...] = (listen_fd, theirs.fileno())
        else:
            assert self.writer is not None, "the slot past the workers is the writer's"
            argv, fds = list(self.writer(theirs.fileno())), (theirs.fileno(),)
        with theirs:
            process = subprocess.Popen(
                argv,
                pass_fds=fds,
                # Its own session: a Ctrl+C at the terminal reaches the supervisor only,
                # which drains the workers once (a worker that got the terminal's SIGINT
                # beside the supervisor's SIGTERM took it as a second Ctrl+C, forcing
                # its exit without the app's shutdown).
                start_new_session=True,
            )
        mine.setblocking(False)
        now = time.monotonic()
        log.info("workers.started", pid=process.pid, worker=index)
        return Worker(index, process, mine, started_at=now, answered_at=now)

    def _answered(self, worker: Worker, now: float) -> bool:
        """Read the worker's answers and ping it again: False once it has been silent
        longer than the health check allows."""
        with contextlib.suppress(BlockingIOError, ConnectionError):
            while readable(worker.control):
                answers = worker.control.recv(64)
                if not answers:
                    break
                worker.answered_at = now
                if SERVING in answers and not worker.serving:
                    worker.serving = True
                    self._say_when_all_serving()
        with contextlib.suppress(BlockingIOError, ConnectionError):
            worker.control.send(PING)
        return now - worker.answered_at <= self.healthcheck_seconds

    def _say_when_all_serving(self) -> None:
        if (
            self._all_serving_said
            or len(self.workers) < self._slots
            or not all(w.serving for w in self.workers)
        ):
            return
        self._all_serving_said = True
        host, port = self.sockets[0].getsockname()[:2]
        log.info(
            "workers.serving",
            url=f"http://{f'[{host}]' if ':' in host else host}:{port}",
            workers=len(self.sockets),
            pids=[w.process.pid for w in self.workers[: len(self.sockets)]],
        )

    def _next_pause(self, index: int, ran_seconds: float) -> float:
        if ran_seconds > HEALTHY_AFTER_SECONDS:
            self._pauses[index] = RESTART_PAUSE_INITIAL_SECONDS
        pause = self._pauses[index]
        self._pauses[index] = min(RESTART_PAUSE_MAX_SECONDS, pause * 2)
        return pause


def readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])
