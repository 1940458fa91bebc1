"""Projection processes the end-to-end tests start, and kill with SIGKILL.

python -m tests.e2e.projection_worker project EVENT_STORE_URL READ_MODEL_URL
    runs one projection worker on generation 1 until killed (or until it fails:
    then it prints the error and exits non-zero);
python -m tests.e2e.projection_worker rebuild EVENT_STORE_URL READ_MODEL_URL
    runs (or resumes) a rebuild and prints the generation it switched to.
"""

import sys
from collections.abc import Sequence

from projections.runner import rebuild, start_runner

USAGE = "usage: python -m tests.e2e.projection_worker project|rebuild EVENT_STORE_URL READ_URL"


def main(argv: Sequence[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("project", "rebuild"):
        print(USAGE, file=sys.stderr)
        return 2
    mode, event_store_url, read_model_url = argv
    if mode == "rebuild":
        print(rebuild(event_store_url, read_model_url), flush=True)
        return 0
    runner = start_runner(event_store_url, read_model_url, 1)
    print("started", flush=True)
    # Blocks for good unless the runner's thread fails; then this re-raises its error.
    runner.run_forever()
    print("the runner stopped on its own", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
