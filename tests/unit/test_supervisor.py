"""Supervised workers: a failing worker is restarted with backoff, its failures are
counted, it is reported down (since when, why) until it has run again for a while, and
stopping the supervisor ends every worker."""

import itertools
import time
from collections.abc import Callable
from typing import Final

from app.supervisor import Supervisor, WorkerState
from tests.support import waiting

WAIT_SECONDS: Final = 10.0
PAUSE_SECONDS: Final = 0.05
# Long beside the few instructions between a restart and the restarted run's first look
# at its own state, however loaded the machine.
RECOVERED_AFTER_SECONDS: Final = 1.0


def eventually(predicate: Callable[[], bool]) -> bool:
    return waiting.eventually(predicate, WAIT_SECONDS)


def supervisor() -> Supervisor:
    return Supervisor(
        backoff_initial_seconds=PAUSE_SECONDS,
        backoff_max_seconds=4 * PAUSE_SECONDS,
        recovered_after_seconds=RECOVERED_AFTER_SECONDS,
    )


def state_of(supervisor: Supervisor, name: str) -> WorkerState:
    return next(state for state in supervisor.states() if state.name == name)


def test_a_worker_that_fails_is_restarted_counted_and_reported_down_until_it_recovers() -> None:
    boss = supervisor()
    starts: list[float] = []
    seen_at_restart: list[WorkerState] = []

    def flaky() -> None:
        starts.append(time.monotonic())
        if len(starts) <= 3:
            raise OSError(f"disk full (attempt {len(starts)})")
        # Looked at as the last restart begins, not whenever the test's poll comes round:
        # a loaded machine could let the recovery window pass first.
        seen_at_restart.append(state_of(boss, "projections"))
        boss.stopping.wait()

    boss.supervise("projections", flaky)
    try:
        assert eventually(lambda: len(seen_at_restart) == 1)
        down = seen_at_restart[0]
        assert not down.up
        assert down.failures == 3
        assert down.last_error == "OSError: disk full (attempt 3)"
        # The pause doubled between restarts.
        gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
        assert gaps[0] >= PAUSE_SECONDS * 0.9
        assert gaps[1] >= 2 * PAUSE_SECONDS * 0.9
        assert eventually(lambda: state_of(boss, "projections").up)
        assert state_of(boss, "projections").failures == 3
        assert state_of(boss, "projections").since >= down.since
    finally:
        boss.stop()
    assert len(starts) == 4


def test_a_worker_that_returns_without_being_stopped_is_a_failure() -> None:
    boss = supervisor()
    runs: list[int] = []

    def quits() -> None:
        runs.append(1)

    boss.supervise("expiry", quits)
    try:
        assert eventually(lambda: len(runs) >= 2)
        assert "returned without being stopped" in (state_of(boss, "expiry").last_error or "")
    finally:
        boss.stop()


def test_a_healthy_worker_is_up_and_stopping_ends_it() -> None:
    boss = supervisor()
    ended: list[bool] = []

    def steady() -> None:
        boss.stopping.wait()
        ended.append(True)

    boss.supervise("generation_watch", steady)
    assert boss.down() == []
    assert state_of(boss, "generation_watch").failures == 0
    boss.stop()
    assert ended == [True]
