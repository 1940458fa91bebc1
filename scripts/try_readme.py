"""Try the README as a newcomer would, from a fresh clone: start `ledger serve` from the
clone with no configuration, take the admin key it prints, run the README's curl block
(HTTP API) as written, then its Python snippet; print what each step answered and exit
non-zero on the first step that fails. Uses this interpreter's installed dependencies
(the clone's own code). tests/e2e/test_readme.py runs it.

    python scripts/try_readme.py [REPOSITORY]   # default: this checkout's HEAD
"""

import json
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
START_TIMEOUT_SECONDS: Final = 60
CLI: Final = "from app.cli import main; main()"


def code_block(readme: str, section: str, language: str) -> str:
    body = readme.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    found = re.search(rf"```{language}\n(.*?)```", body, re.DOTALL)
    if found is None:
        raise SystemExit(f"no {language} block under '## {section}'")
    return found.group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_healthy(url: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"ledger serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/v1/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("ledger serve did not become healthy")


def run_curl_block(clone: Path, block: str, key: str, port: int) -> list[dict[str, object]]:
    script = block.replace("KEY=lk_…", f"KEY={key}").replace(
        "API=localhost:8000", f"API=127.0.0.1:{port}"
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
        raise SystemExit(f"the README's curl block failed ({ran.returncode}):\n{ran.stderr}")
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
        [sys.executable, "-c", "\n".join(checked)],
        cwd=clone,
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
        port = free_port()
        with (Path(folder) / "serve.out").open("w+") as out:
            server = subprocess.Popen(
                [sys.executable, "-c", CLI, "serve", "--port", str(port)],
                cwd=clone,
                stdout=out,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            try:
                wait_healthy(f"http://127.0.0.1:{port}", server)
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
