"""A benchmark side imports its own tree's code: bench_audit, run or imported in a
process whose ``PYTHONPATH`` names another tree (a baseline), must not put its own tree
before it, or the "baseline" would measure this tree's code."""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

REPOSITORY: Final = Path(__file__).resolve().parents[2]
WHICH_APP: Final = "import bench_audit, app; print(app.__file__)"


def test_bench_audit_in_a_process_of_another_tree_imports_that_trees_app(
    tmp_path: Path,
) -> None:
    other = tmp_path / "other-tree"
    shutil.copytree(REPOSITORY / "app", other / "app", ignore=shutil.ignore_patterns("__pycache__"))
    pythonpath = os.pathsep.join([str(other), str(REPOSITORY / "scripts")])
    found = subprocess.run(
        [sys.executable, "-c", WHICH_APP],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": pythonpath},
        check=True,
        capture_output=True,
        text=True,
    )
    assert Path(found.stdout.strip()) == other / "app" / "__init__.py"
