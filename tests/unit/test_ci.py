"""CI runs the README's test command (`.ci/run`): what a newcomer runs is what CI checks,
and the suite's parallelism is stated in one place a reader finds."""

import re
import shlex
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
TEST_COMMAND: Final = re.compile(r"\.venv/bin/python -m pytest[^\n]*")


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
