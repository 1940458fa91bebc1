"""The benchmarks that compare two sides measure them in turn: a side that always ran
first would always meet the machine as the previous phase left it."""

from typing import Final

import bench_workers  # scripts/: as the benchmarks import each other
from benchlib import in_turn

ROUNDS: Final = 4


def test_each_side_goes_first_in_every_other_round() -> None:
    assert [in_turn((1, 2), round_number) for round_number in range(ROUNDS)] == [
        [1, 2],
        [2, 1],
        [1, 2],
        [2, 1],
    ]


def test_the_workers_benchmark_runs_one_process_first_only_in_half_its_rounds() -> None:
    measured = bench_workers.phases(ROUNDS, ["spread", "hot"])
    firsts = [
        processes
        for index, (_, _, processes) in enumerate(measured)
        if index % len(bench_workers.SIDES) == 0
    ]
    assert firsts == [1, 1, 2, 2, 1, 1, 2, 2]
    # Every round measures every shape on both sides.
    assert sorted(measured) == sorted(
        (round_number, shape, processes)
        for round_number in range(ROUNDS)
        for shape in ("spread", "hot")
        for processes in (1, 2)
    )
