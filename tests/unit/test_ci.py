"""CI runs the README's test command (`.ci/run`): what a newcomer runs is what CI checks,
and the suite's parallelism is stated in one place a reader finds."""

import re
import shlex
import time
from pathlib import Path
from typing import Final

from hypothesis import given, settings
from hypothesis import strategies as st

ROOT: Final = Path(__file__).resolve().parents[2]
TEST_COMMAND: Final = re.compile(r"\.venv/bin/python -m pytest[^\n]*")
# Longer than Hypothesis' default deadline per example (200 ms), as a loaded machine
# stretches a fast example.
SLOW_EXAMPLE_SECONDS: Final = 0.3


def test_ci_runs_the_readmes_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    set_up = readme.split("## Set-up, in two commands", 1)[1].split("\n## ", 1)[0]
    documented = TEST_COMMAND.findall(set_up)
    ran = TEST_COMMAND.findall((ROOT / ".ci" / "run").read_text())
    assert len(documented) == 1, documented
    assert ran == documented
    # The whole suite, slow tests included, in worker processes.
    arguments = shlex.split(ran[0])
    assert "-m" not in arguments[3:]
    assert "-n" in arguments


@settings(max_examples=2)
@given(st.integers())
def test_a_property_example_slowed_by_a_loaded_machine_is_not_a_failure(number: int) -> None:
    """The suite's Hypothesis profile (tests/conftest.py) sets no deadline per example:
    a property test is failed by what it finds, never by how long the machine took."""
    started = time.monotonic()
    time.sleep(SLOW_EXAMPLE_SECONDS)
    assert time.monotonic() - started >= SLOW_EXAMPLE_SECONDS, number
