"""A throwaway PostgreSQL server for tests and benchmarks.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` OS
user (``runuser``); its data directory is a fresh temp folder, its port a free one
(reserved while it lives, ``tests.support.ports``), and it is stopped and deleted
afterwards. Nothing here skips: if the binaries are
missing, starting fails loudly.
"""

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psycopg

from tests.support.ports import reserved_port

START_TIMEOUT_SECONDS: Final = 60


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    # Set by running_postgres, so that a test can stop and start the same server.
    datadir: Path | None = None
    options: str = ""

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are cut), keeping its data."""
        assert self.datadir is not None, "not a server running_postgres started"
        _pg_ctl(self.datadir, "-m", "fast", "-w", "stop")

    def start(self) -> None:
        assert self.datadir is not None, "not a server running_postgres started"
        _pg_ctl(
            self.datadir,
            "-o",
            self.options,
            "-l",
            str(self.datadir.parent / "log"),
            "-w",
            "-t",
            str(START_TIMEOUT_SECONDS),
            "start",
        )
        _wait_ready(self)

    def url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, dbname: str) -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
            connection.execute(f'CREATE DATABASE "{dbname}"')
        return self.url(dbname)


def _bindir() -> Path:
    found = shutil.which("pg_config")
    if found:
        output = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=True)
        candidate = Path(output.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@contextmanager
def running_postgres(*, fsync: bool = True, settings: str = "") -> Iterator[PostgresServer]:
    """A throwaway server; ``settings``: more ``-c name=value`` options for it (benchmarks)."""
    bindir = _bindir()
    workdir = Path(tempfile.mkdtemp(prefix="ledger-pg-"))
    datadir = workdir / "data"
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
    os.chmod(workdir, 0o700)
    subprocess.run(
        _as_server_user(
            [
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    # Reserved while the server lives: also while a test stops and starts it again.
    with reserved_port() as port:
        options = (
            f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c max_connections=200 "
            f"-c fsync={'on' if fsync else 'off'} -c shared_buffers=256MB {settings}"
        ).strip()
        server = PostgresServer(
            host="127.0.0.1", port=port, user="postgres", datadir=datadir, options=options
        )
        server.start()
        try:
            yield server
        finally:
            subprocess.run(
                _as_server_user(
                    [str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"]
                ),
                check=False,
                capture_output=True,
            )
            shutil.rmtree(workdir, ignore_errors=True)


def _pg_ctl(datadir: Path, *arguments: str) -> None:
    command = [str(_bindir() / "pg_ctl"), "-D", str(datadir), *arguments]
    subprocess.run(_as_server_user(command), check=True, capture_output=True)


def _wait_ready(server: PostgresServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            with psycopg.connect(server.url("postgres"), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
