"""Try the README as a newcomer would, from a fresh clone: run its set-up command there
as written (a virtualenv, `pip install -e .` from the package index, `ledger serve` with no
configuration; only `--port` is added, a free one, and a longer read wait for a loaded
machine), take the admin key the server prints, run the README's curl block (HTTP API) as
written, then its Python snippet with the clone's own interpreter; print what each step
answered and exit non-zero on the first step that fails. Nothing of this checkout's
virtualenv is used. The README's other command (install the dev extras, run the whole
suite) is the one CI runs (.ci/run).
tests/e2e/test_readme.py runs this script.

    python scripts/try_readme.py [REPOSITORY]   # default: this checkout's HEAD
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Final

from benchlib import free_port

ROOT: Final = Path(__file__).resolve().parents[1]
START_TIMEOUT_SECONDS: Final = 120
# The one setting added to the README's serve: on a loaded machine the projections child
# may reach the spend's position after the default 5 s read wait (answered 503, "retry
# shortly"); the read-your-write step waits for that condition up to this bound instead.
READ_WAIT_SECONDS: Final = "30"
# A virtualenv and the package's dependencies from the index: minutes on a loaded machine.
INSTALL_TIMEOUT_SECONDS: Final = 1200
SET_UP_SECTION: Final = "Set-up, in two commands"
SERVE: Final = ".venv/bin/ledger serve"


def newcomer_environment() -> dict[str, str]:
    """This environment without the ledger's settings or this checkout's virtualenv."""
    drop = ("LEDGER_", "VIRTUAL_ENV", "PYTHONPATH")
    return {name: value for name, value in os.environ.items() if not name.startswith(drop)}


def set_up_command(readme: str) -> tuple[str, list[str]]:
    """The README's set-up command: what installs (run as written), and what serves."""
    command = code_block(readme, SET_UP_SECTION, "sh").strip()
    install, _, serve = command.rpartition(" && ")
    if not serve.startswith(SERVE):
        raise SystemExit(f"the set-up command no longer ends with {SERVE!r}: {command}")
    return install, shlex.split(serve)


def install(clone: Path, command: str) -> None:
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=clone,
        env=newcomer_environment(),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
        check=False,
    )
    if ran.returncode != 0:
        raise SystemExit(f"the README's install failed ({ran.returncode}):\n{ran.stderr}")


def code_block(readme: str, section: str, language: str) -> str:
    body = readme.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    found = re.search(rf"```{language}\n(.*?)```", body, re.DOTALL)
    if found is None:
        raise SystemExit(f"no {language} block under '## {section}'")
    return found.group(1)


def wait_ready(url: str, server: subprocess.Popen[str]) -> None:
    """Until /v1/ready answers 200: the store reachable and the projection workers up
    and caught up (the README's reads ask the views for the writes' positions)."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"ledger serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/v1/ready", timeout=2):
                return
        except OSError:  # refused, or 503 while not ready
            time.sleep(0.2)
    raise SystemExit(f"ledger serve was not ready within {START_TIMEOUT_SECONDS} s")


def run_curl_block(clone: Path, block: str, key: str, port: int) -> list[dict[str, object]]:
    # The block as written, but where it fails (-f: an HTTP error), curl also shows the
    # problem document it was answered.
    script = (
        block.replace("KEY=lk_…", f"KEY={key}")
        .replace("API=localhost:8000", f"API=127.0.0.1:{port}")
        .replace("curl -sf ", "curl -sS --fail-with-body ")
    )
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if ran.returncode != 0:
        raise SystemExit(
            f"the README's curl block failed ({ran.returncode}) after answering:\n"
            f"{ran.stdout}\n{ran.stderr}"
        )
    # curl prints each answer without a newline: split the concatenated JSON documents.
    decoder, answers, text = json.JSONDecoder(), [], ran.stdout.strip()
    while text:
        answer, end = decoder.raw_decode(text)
        answers.append(answer)
        text = text[end:].lstrip()
    return answers


def run_python_snippet(clone: Path, snippet: str) -> None:
    """Each line ending in ``# <number>`` must evaluate to that number."""
    checked = [
        re.sub(r"^(.*?)\s+# (-?\d+)$", r"assert (\1) == \2, '\1'", line)
        for line in snippet.splitlines()
    ]
    ran = subprocess.run(
        [str(clone / ".venv" / "bin" / "python"), "-c", "\n".join(checked)],
        cwd=clone,
        env=newcomer_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if ran.returncode != 0:
        raise SystemExit(f"the README's Python snippet failed:\n{ran.stderr}")


def main() -> None:
    source = sys.argv[1] if len(sys.argv) > 1 else str(ROOT)
    with tempfile.TemporaryDirectory() as folder:
        clone = Path(folder) / "clone"
        subprocess.run(["git", "clone", "--quiet", source, str(clone)], check=True)
        readme = (clone / "README.md").read_text()
        install_command, serve = set_up_command(readme)
        install(clone, install_command)
        print(f"installed as the README says: {install_command}", file=sys.stderr)
        port = free_port()
        with (Path(folder) / "serve.out").open("w+") as out:
            server = subprocess.Popen(
                [*serve, "--port", str(port)],
                cwd=clone,
                env={**newcomer_environment(), "LEDGER_READ_WAIT_SECONDS": READ_WAIT_SECONDS},
                stdout=out,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            try:
                wait_ready(f"http://127.0.0.1:{port}", server)
                out.seek(0)
                key = out.read().strip().splitlines()[-1]
                answers = run_curl_block(clone, code_block(readme, "HTTP API", "sh"), key, port)
            finally:
                server.terminate()
                server.wait(timeout=30)
        print(json.dumps(answers))
        run_python_snippet(clone, code_block(readme, "Using the ledger from Python", "python"))
        print("the README's workflow ran from a fresh clone")


if __name__ == "__main__":
    main()
