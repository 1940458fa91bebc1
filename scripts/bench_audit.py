"""Benchmark of the audit tooling: replay and audit of a long log, against beancount and
hledger computing the balances of the same transfers from the exported journal.

One run:

* builds a SQLite event log of ``--transfers`` transfers (default 1,000,000; three
  events each) with ``Ledger.record_batch`` atomic batches of 1,000 (time reported);
* in a fresh subprocess each (so that peak memory is the process's own: its
  ``VmHWM``, see ``Run``): ``app.audit.replay.replay`` and
  ``app.audit.audit.Auditor.run`` (without projections), events/s and peak RSS;
  then ``write_journal`` in beancount and in hledger format;
* beancount: ``loader.load_file`` (pickle cache off; it also checks the export's
  balance assertions, as ``bean-check`` does) plus ``realization.realize`` and every
  account's balance, in a fresh subprocess; hledger: ``hledger -f FILE bal``
  (Debian package ``hledger``; reported as not installed when absent);
* the balances of all three are compared with each other, and the ratios of wall
  times ours / beancount and ours / hledger are printed (goal: our replay faster
  than both, i.e. ratios below 1).

With ``--baseline-tree DIR`` (a checkout of an older commit) it measures instead our
``read_log`` alone, replay, audit and beancount export on this tree and on that one,
each measure on both sides back to back (in turn) for ``--rounds`` rounds, each a fresh
process importing its own tree's code (``PYTHONPATH``; the tree each imported is
printed), and prints this tree's wall and CPU time of the phase over the baseline's;
the sides must give the same events read, balances, audit counts and journal.

Run from the repository root::

    .venv/bin/python scripts/bench_audit.py --quick
    .venv/bin/python scripts/bench_audit.py --json var/bench_audit.json
    .venv/bin/python scripts/bench_audit.py --quick --baseline-tree /tmp/bench-s15
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

# This tree's code, after whatever PYTHONPATH names: a side of a baseline run (or a
# script importing this one in a side's process) must import its own tree's code.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from benchlib import git_commit, in_turn, machine

import app
from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.audit.audit import Auditor
from app.audit.export import ROOTS, account_name, write_journal
from app.audit.log import Instant, read_log
from app.audit.replay import replay
from app.domain.account import default_account_type
from app.persistence.stores import event_store_env, sqlite_url

UNIT: Final = "CREDITS"
FUNDING: Final = 10**12
BUILD_BATCH: Final = 1000
GROUP_SIZE: Final = 50  # users per batch: keeps aggregate loads per batch low
REPORT_EVERY_SECONDS: Final = 30.0
MANIFEST: Final = "manifest.json"
HWM_POLL_SECONDS: Final = 0.05
REPO: Final = Path(__file__).resolve().parent.parent
# What a baseline run measures on each side (the names of run_child's measurements).
COMPARED: Final = ("read-log", "replay", "audit", "export-beancount")

console = Console(width=max(120, Console().width))
log = Console(stderr=True)


# Building the log ------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    transfers: int
    users: int
    seed: int


def user_id(index: int) -> str:
    return f"user:{index}"


def build_log(url: str, plan: Plan) -> dict[str, Any]:
    """``plan.transfers`` transfers: one grant per user from ``issuance``, then random
    pairs of users within a rotating group, in atomic batches of 1,000."""
    log.print(f"building the log: {plan.transfers:,} transfers, {plan.users:,} users")
    rng = random.Random(plan.seed)
    ledger = Ledger(event_store_env(url))
    started = time.perf_counter()
    next_report = started + REPORT_EVERY_SECONDS
    try:
        ledger.open_account(OpenAccount("issuance", UNIT, allow_negative=True))
        for index in range(plan.users):
            ledger.open_account(OpenAccount(user_id(index), UNIT))
        commands_total = 0
        grants = [
            RecordTransfer(f"grant:{i}", "issuance", user_id(i), FUNDING)
            for i in range(min(plan.users, plan.transfers))
        ]
        for start in range(0, len(grants), BUILD_BATCH):
            ledger.record_batch(grants[start : start + BUILD_BATCH], atomic=True)
        commands_total = len(grants)
        group = min(GROUP_SIZE, plan.users)
        number = 0
        while commands_total < plan.transfers:
            size = min(BUILD_BATCH, plan.transfers - commands_total)
            base = (number * group) % plan.users
            batch = []
            for i in range(size):
                debit = rng.randrange(group)
                credit = (debit + 1 + rng.randrange(group - 1)) % group
                batch.append(
                    RecordTransfer(
                        f"t:{number}:{i}",
                        user_id((base + debit) % plan.users),
                        user_id((base + credit) % plan.users),
                        1 + rng.randrange(100),
                    )
                )
            ledger.record_batch(batch, atomic=True)
            commands_total += size
            number += 1
            now = time.perf_counter()
            if now >= next_report:
                elapsed = now - started
                log.print(
                    f"  {commands_total:,} transfers in {elapsed:.0f}s "
                    f"({commands_total / elapsed:,.0f}/s)"
                )
                next_report = now + REPORT_EVERY_SECONDS
        head = ledger.recorder.max_notification_id() or 0
    finally:
        ledger.close()
    seconds = time.perf_counter() - started
    log.print(f"  built {commands_total:,} transfers, {head:,} events in {seconds:.1f}s")
    return {
        "transfers": commands_total,
        "events": head,
        "seconds": round(seconds, 2),
        "transfers_per_second": round(commands_total / seconds, 1),
    }


# Measurements, each in a fresh subprocess ------------------------------------------------


class Stopwatch:
    """This process's wall and CPU seconds since it was made (CPU: what a loaded
    machine's other work moves least)."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def figures(self) -> dict[str, float]:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return {"seconds": wall, "cpu_seconds": cpu}


def measure_replay(store: str, balances_out: Path) -> dict[str, Any]:
    ledger = Ledger(event_store_env(store))
    try:
        watch = Stopwatch()
        accounts = replay(ledger, Instant())
        timed = watch.figures()
        events = ledger.recorder.max_notification_id() or 0
    finally:
        ledger.close()
    # Journals count debits positive: their balance is minus ours (app/audit/export.py).
    balances = {
        account_name(a.id, default_account_type(a.allow_negative)): -a.balance for a in accounts
    }
    balances_out.write_text(json.dumps(balances))
    return {**timed, "events": events, "accounts": len(accounts)}


def measure_read_log(store: str) -> dict[str, Any]:
    """``read_log`` alone: the whole log as domain events, what replay, audit and export
    read it with."""
    ledger = Ledger(event_store_env(store))
    try:
        watch = Stopwatch()
        events = sum(1 for _ in read_log(ledger))
        timed = watch.figures()
    finally:
        ledger.close()
    return {**timed, "events": events}


def measure_audit(store: str) -> dict[str, Any]:
    ledger = Ledger(event_store_env(store))
    try:
        watch = Stopwatch()
        report = Auditor(ledger, Instant(), None).run()
        timed = watch.figures()
    finally:
        ledger.close()
    return {
        **timed,
        "events": report.events,
        "accounts": report.accounts,
        "transfers": report.transfers,
        "violations": report.violation_count,
    }


def measure_export(store: str, journal_format: str, out: Path) -> dict[str, Any]:
    ledger = Ledger(event_store_env(store))
    try:
        watch = Stopwatch()
        with out.open("w") as stream:
            transactions = write_journal(ledger, Instant(), stream, journal_format)
        timed = watch.figures()
        events = ledger.recorder.max_notification_id() or 0
    finally:
        ledger.close()
    return {
        **timed,
        "events": events,
        "transactions": transactions,
        "bytes": out.stat().st_size,
    }


def measure_beancount(journal: Path, balances_out: Path) -> dict[str, Any]:
    from beancount import loader  # noqa: PLC0415 - only in this subprocess
    from beancount.core import realization  # noqa: PLC0415

    loader.initialize(use_cache=False)  # no pickle cache: every run parses the file
    started = time.perf_counter()
    entries, errors, _options = loader.load_file(str(journal))
    loaded = time.perf_counter()
    realize: Any = realization.realize  # beancount's realization module is untyped
    iter_children: Any = realization.iter_children
    root = realize(entries)
    balances: dict[str, str] = {}
    for real_account in iter_children(root):
        for position in real_account.balance:
            balances[real_account.account] = str(position.units.number)
    finished = time.perf_counter()
    balances_out.write_text(json.dumps(balances))
    return {
        "seconds": finished - started,
        "load_seconds": loaded - started,
        "realize_seconds": finished - loaded,
        "entries": len(entries),
        "errors": len(errors),
        "first_errors": [str(error.message) for error in errors[:3]],
    }


def child_main(args: argparse.Namespace) -> int:
    """``--measure KIND``: one measurement, its figures written to ``--result``."""
    kind = str(args.measure)
    if kind == "replay":
        figures = measure_replay(str(args.store), Path(args.out))
    elif kind == "read-log":
        figures = measure_read_log(str(args.store))
    elif kind == "audit":
        figures = measure_audit(str(args.store))
    elif kind == "export":
        figures = measure_export(str(args.store), str(args.format), Path(args.out))
    elif kind == "beancount":
        figures = measure_beancount(Path(args.journal), Path(args.out))
    else:
        raise SystemExit(f"unknown measurement {kind!r}")
    figures["vm_hwm_kib"] = vm_hwm_kib("self")
    figures["imported"] = str(Path(app.__file__).resolve().parent.parent)
    Path(args.result).write_text(json.dumps(figures))
    return 0


@dataclass
class Run:
    """A subprocess: its wall time, its peak RSS and the figures it reported.

    The peak is the process's ``VmHWM`` (high-water mark of its own memory map): read
    by our Python children themselves as they finish, and polled from /proc for other
    programs. ``ru_maxrss`` (from ``wait4``) is kept as well, but it cannot serve for
    small processes: Linux carries the spawning process's RSS over into the child's
    ``ru_maxrss`` across fork and exec, so every child of this ~55 MiB script would
    report at least that."""

    name: str
    wall_seconds: float
    ru_maxrss_kib: int
    polled_hwm_kib: int
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """The measured phase (the process's own timing), else the wall time."""
        return float(self.figures.get("seconds", self.wall_seconds))

    @property
    def peak_kib(self) -> int:
        return int(self.figures.get("vm_hwm_kib", self.polled_hwm_kib))

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "wall_seconds": round(self.wall_seconds, 3),
            "peak_rss_mib": round(self.peak_kib / 1024, 1),
            "ru_maxrss_mib": round(self.ru_maxrss_kib / 1024, 1),
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in self.figures.items()},
        }


def vm_hwm_kib(pid: int | str) -> int | None:
    """The peak RSS of a live process's memory map, or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def run_process(
    name: str,
    command: list[str],
    stdout_path: Path | None = None,
    env: dict[str, str] | None = None,
) -> Run:
    log.print(f"  {name}: {' '.join(command[-6:])}")
    polled = 0
    with (stdout_path or Path(os.devnull)).open("wb") as stdout:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, env=env)
        while True:
            polled = max(polled, vm_hwm_kib(process.pid) or 0)
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid != 0:
                break
            time.sleep(HWM_POLL_SECONDS)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{name} failed with exit code {process.returncode}")
    return Run(name, wall, usage.ru_maxrss, polled)


def run_child(name: str, workdir: Path, arguments: list[str], tree: Path = REPO) -> Run:
    """This script's ``--measure`` in a fresh process importing ``tree``'s code."""
    result = workdir / f"result-{name}.json"
    command = [sys.executable, str(Path(__file__).resolve()), *arguments, "--result", str(result)]
    pythonpath = os.pathsep.join([str(tree), str(Path(__file__).resolve().parent)])
    measured = run_process(name, command, env={**os.environ, "PYTHONPATH": pythonpath})
    measured.figures = json.loads(result.read_text())
    if measured.figures.get("imported", str(tree)) != str(tree):
        raise SystemExit(f"{name}: {tree}'s side imported {measured.figures['imported']}")
    log_run(measured)
    return measured


def log_run(measured: Run) -> None:
    log.print(f"    {measured.wall_seconds:.1f}s, peak RSS {measured.peak_kib / 1024:,.0f} MiB")


# hledger -----------------------------------------------------------------------------------


def parse_hledger_balances(text: str) -> dict[str, str]:
    """``hledger bal`` lines: ``  AMOUNT COMMODITY  ACCOUNT`` (flat mode, the default)."""
    balances = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].split(":")[0] in ROOTS.values():
            balances[parts[2]] = parts[0].replace(",", "")
    return balances


def compare(ours: dict[str, int], theirs: dict[str, str]) -> int:
    """How many accounts' balances differ (zero balances may be absent from theirs)."""
    names = set(ours) | set(theirs)
    return sum(1 for name in names if Decimal(theirs.get(name, "0")) != ours.get(name, 0))


# The run -----------------------------------------------------------------------------------


@dataclass
class Results:
    plan: Plan
    build: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, Run] = field(default_factory=dict)
    mismatches: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def ratios(self) -> dict[str, float]:
        """Wall time of our replay over theirs, each a fresh process computing every
        balance from its own input (< 1: ours is faster)."""
        ours = self.runs.get("replay")
        if ours is None:
            return {}
        return {
            f"replay / {name}": ours.wall_seconds / self.runs[name].wall_seconds
            for name in ("beancount", "hledger")
            if name in self.runs
        }


def load_or_build(workdir: Path, plan: Plan) -> tuple[str, dict[str, Any]]:
    store = workdir / "events.sqlite"
    manifest = workdir / MANIFEST
    if manifest.exists() and store.exists():
        saved = json.loads(manifest.read_text())
        if saved.get("plan") == asdict(plan):
            log.print(f"reusing the log in {workdir} (built in {saved['build']['seconds']}s)")
            return sqlite_url(store), dict(saved["build"], reused=True)
        raise SystemExit(f"{workdir} holds a log of another plan: {saved.get('plan')}")
    if store.exists():
        raise SystemExit(f"{store} exists without a manifest: use an empty --workdir")
    build = build_log(sqlite_url(store), plan)
    manifest.write_text(json.dumps({"plan": asdict(plan), "build": build}, indent=2))
    return sqlite_url(store), build


def run(plan: Plan, workdir: Path) -> Results:
    results = Results(plan)
    store, results.build = load_or_build(workdir, plan)
    log.print("measuring (one fresh process each)")
    ours_path = workdir / "balances-replay.json"
    results.runs["replay"] = run_child(
        "replay", workdir, ["--measure", "replay", "--store", store, "--out", str(ours_path)]
    )
    results.runs["audit"] = run_child("audit", workdir, ["--measure", "audit", "--store", store])
    violations = results.runs["audit"].figures["violations"]
    if violations:
        results.notes.append(f"the audit found {violations} violations on a healthy log")
    ours = {name: int(value) for name, value in json.loads(ours_path.read_text()).items()}

    journals = {}
    for journal_format, suffix in (("beancount", "beancount"), ("hledger", "journal")):
        journals[journal_format] = workdir / f"export.{suffix}"
        results.runs[f"export {journal_format}"] = run_child(
            f"export-{journal_format}",
            workdir,
            [
                "--measure",
                "export",
                "--store",
                store,
                "--format",
                journal_format,
                "--out",
                str(journals[journal_format]),
            ],
        )

    bean_path = workdir / "balances-beancount.json"
    results.runs["beancount"] = run_child(
        "beancount",
        workdir,
        [
            "--measure",
            "beancount",
            "--journal",
            str(journals["beancount"]),
            "--out",
            str(bean_path),
        ],
    )
    if results.runs["beancount"].figures["errors"]:
        results.notes.append(
            f"beancount reported {results.runs['beancount'].figures['errors']} errors: "
            f"{results.runs['beancount'].figures['first_errors']}"
        )
    results.mismatches["beancount"] = compare(ours, json.loads(bean_path.read_text()))

    hledger = shutil.which("hledger")
    if hledger is None:
        log.print("  hledger not installed (Debian package hledger): skipped")
        results.notes.append("hledger not installed")
    else:
        version = subprocess.run(
            [hledger, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        output = workdir / "hledger-bal.txt"
        results.runs["hledger"] = run_process(
            "hledger", [hledger, "-f", str(journals["hledger"]), "bal"], stdout_path=output
        )
        results.runs["hledger"].figures = {"version": version}
        log_run(results.runs["hledger"])
        theirs = parse_hledger_balances(output.read_text())
        results.mismatches["hledger"] = compare(ours, theirs)
    return results


def side_arguments(store: str, workdir: Path, side: str) -> dict[str, list[str]]:
    """Each of ``COMPARED``'s ``--measure`` arguments on ``side`` (files of its own)."""
    journal = workdir / f"export-{side}.beancount"
    return {
        "read-log": ["--measure", "read-log", "--store", store],
        "replay": [
            "--measure",
            "replay",
            "--store",
            store,
            "--out",
            str(balances_of(workdir, side)),
        ],
        "audit": ["--measure", "audit", "--store", store],
        "export-beancount": [
            *("--measure", "export", "--store", store, "--format", "beancount"),
            *("--out", str(journal)),
        ],
    }


def balances_of(workdir: Path, side: str) -> Path:
    return workdir / f"balances-{side}.json"


def answers_of(runs: dict[str, Run], workdir: Path, side: str) -> tuple[Any, ...]:
    """What ``side``'s runs answered: events read, balances, audit counts, journal."""
    audit = runs["audit"].figures
    return (
        runs["read-log"].figures["events"],
        hashlib.sha256(balances_of(workdir, side).read_bytes()).hexdigest(),
        [audit[name] for name in ("events", "accounts", "transfers", "violations")],
        hashlib.sha256((workdir / f"export-{side}.beancount").read_bytes()).hexdigest(),
    )


def compare_trees(store: str, workdir: Path, baseline: Path, rounds: int) -> None:
    """``COMPARED`` on the baseline tree and this one, ``rounds`` times, each measure on
    both sides back to back (in turn): each phase's wall and CPU seconds and this tree's
    over the baseline's."""
    sides = {"baseline": baseline, "this-tree": REPO}
    for number in range(rounds):
        runs: dict[str, dict[str, Run]] = {side: {} for side in sides}
        for name in COMPARED:
            for side in in_turn(list(sides), number):
                arguments = side_arguments(store, workdir, side)[name]
                runs[side][name] = run_child(f"{side}-{name}", workdir, arguments, sides[side])
        load = os.getloadavg()[0]
        console.print(f"round {number + 1} (load {load:.1f}), baseline -> this tree:")
        for name in COMPARED:
            before, after = (runs[side][name].figures for side in sides)
            wall = after["seconds"] / before["seconds"]
            cpu = after["cpu_seconds"] / before["cpu_seconds"]
            console.print(
                f"  {name}: wall {before['seconds']:,.2f} -> {after['seconds']:,.2f} s "
                f"(x{wall:.3f}), CPU {before['cpu_seconds']:,.2f} -> "
                f"{after['cpu_seconds']:,.2f} s (x{cpu:.3f})"
            )
        answers = {side: answers_of(runs[side], workdir, side) for side in sides}
        same = answers["baseline"] == answers["this-tree"]
        imported = ", ".join(f"{side} {runs[side]['replay'].figures['imported']}" for side in sides)
        console.print(f"  {'same answers' if same else 'ANSWERS DIFFER'}; imported: {imported}")


# Report ------------------------------------------------------------------------------------


def print_report(results: Results, seconds: float) -> None:
    build = results.build
    console.print(
        f"log: {build['transfers']:,} transfers, {build['events']:,} events, built in "
        f"{build['seconds']:,.1f}s ({build['transfers_per_second']:,.0f} transfers/s, atomic "
        f"batches of 1,000){' [reused]' if build.get('reused') else ''}"
    )
    table = Table(title="Replay, audit, export and other tools' balances (one process each)")
    for column in (
        "what",
        "wall s",
        "phase s",
        "events/s",
        "transfers/s",
        "peak RSS MiB",
        "detail",
    ):
        table.add_column(column, justify="left" if column in ("what", "detail") else "right")
    transfers = int(build["transfers"])
    for name, measured in results.runs.items():
        figures = measured.figures
        events = figures.get("events")
        detail = ""
        if name == "beancount":
            detail = (
                f"load {figures['load_seconds']:.1f}s + realize {figures['realize_seconds']:.1f}s,"
                f" {figures['errors']} errors"
            )
        elif name == "audit":
            detail = f"{figures['violations']} violations"
        elif name.startswith("export"):
            detail = f"{figures['bytes'] / 2**20:,.0f} MiB"
        elif name == "hledger":
            detail = str(figures.get("version", ""))
        if name in results.mismatches:
            detail += f"; {results.mismatches[name]} balances differ from ours"
        table.add_row(
            name,
            f"{measured.wall_seconds:,.1f}",
            f"{measured.seconds:,.1f}",
            f"{events / measured.seconds:,.0f}" if events else "",
            f"{transfers / measured.seconds:,.0f}",
            f"{measured.peak_kib / 1024:,.0f}",
            detail,
        )
    console.print(table)
    for name, ratio in results.ratios().items():
        verdict = "ours faster" if ratio < 1 else "ours SLOWER"
        console.print(f"wall-time ratio {name}: {ratio:.2f} ({verdict})")
    for note in results.notes:
        console.print(f"note: {note}")
    console.print(f"machine: {machine()}; total {seconds:.0f}s")


def to_json(results: Results, seconds: float, load_before: float, commit: str) -> dict[str, Any]:
    return {
        "machine": machine(),
        "load_average_1m_at_start": round(load_before, 2),
        "commit_at_start": commit,
        "plan": asdict(results.plan),
        "total_seconds": round(seconds, 1),
        "build": results.build,
        "runs": {name: measured.as_json() for name, measured in results.runs.items()},
        "balance_mismatches": results.mismatches,
        "wall_ratios": {name: round(ratio, 3) for name, ratio in results.ratios().items()},
        "notes": results.notes,
    }


# Command line ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--transfers", type=int, help="transfers in the log (default 1,000,000; quick 20,000)"
    )
    parser.add_argument("--users", type=int, help="user accounts (default 1000; quick 200)")
    parser.add_argument("--seed", type=int, default=20240601, help="random seed")
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="a checkout of an older commit: measure our replay, audit and export there and "
        "here, sides in turn (no beancount or hledger)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --baseline-tree")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the log and journals here, and reuse a log built there with the same "
        "plan (default: a temp dir, removed)",
    )
    # One measurement in a fresh process (used by the run itself).
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--format", help=argparse.SUPPRESS)
    parser.add_argument("--journal", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def plan_from(args: argparse.Namespace) -> Plan:
    quick = bool(args.quick)
    users = args.users if args.users is not None else (200 if quick else 1000)
    transfers = args.transfers if args.transfers is not None else (20_000 if quick else 1_000_000)
    if users < 2 or transfers < 1:
        raise SystemExit("--users needs at least 2, --transfers at least 1")
    return Plan(transfers=transfers, users=users, seed=int(args.seed))


@contextmanager
def working_directory(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="ledger-bench-audit-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure is not None:
        return child_main(args)
    plan = plan_from(args)
    load_before = os.getloadavg()[0]
    commit = git_commit()  # the code this run imported (others may commit meanwhile)
    log.print(f"plan: {plan}; load average {load_before:.1f} on {os.cpu_count()} cpus")
    started = time.perf_counter()
    if args.baseline_tree is not None:
        with working_directory(args.workdir) as workdir:
            store, _ = load_or_build(workdir, plan)
            compare_trees(store, workdir, args.baseline_tree.resolve(), int(args.rounds))
        console.print(f"machine: {machine()}; commit {commit}")
        return 0
    with working_directory(args.workdir) as workdir:
        results = run(plan, workdir)
    seconds = time.perf_counter() - started
    print_report(results, seconds)
    if args.json is not None:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(to_json(results, seconds, load_before, commit), indent=2) + "\n")
        console.print(f"figures written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
