"""`bench_goals.py` splits each side's wall time: CPU, waiting for a core (the run queue,
from each thread's /proc schedstat), and the rest, blocked."""

from pathlib import Path

from benchlib import run_queue_seconds


def a_thread(tasks: Path, tid: int, schedstat: str) -> None:
    (tasks / str(tid)).mkdir(parents=True)
    (tasks / str(tid) / "schedstat").write_text(schedstat)


def test_the_run_queue_time_is_the_second_field_summed_over_the_threads(tmp_path: Path) -> None:
    a_thread(tmp_path, 1, "900000000 250000000 40\n")
    a_thread(tmp_path, 2, "100000000 1500000000 7\n")
    assert run_queue_seconds(tmp_path) == 1.75


def test_a_thread_gone_or_unreadable_counts_for_nothing(tmp_path: Path) -> None:
    a_thread(tmp_path, 1, "1 500000000 1\n")
    (tmp_path / "2").mkdir()  # gone between the listing and the read: no schedstat
    a_thread(tmp_path, 3, "")
    assert run_queue_seconds(tmp_path) == 0.5


def test_this_processs_run_queue_time_never_goes_back() -> None:
    first = run_queue_seconds()
    assert first >= 0
    assert run_queue_seconds() >= first
