"""A background worker as one start/stop-able unit (what a supervisor runs)."""

import threading


class ThreadWorker:
    """Runs ``run(stopping)`` in a daemon thread until ``stop()``."""

    thread_name = "worker"

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self, stopping: threading.Event) -> None:
        raise NotImplementedError

    def start(self) -> "ThreadWorker":
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self.run, args=(self._stopping,), daemon=True, name=self.thread_name
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
