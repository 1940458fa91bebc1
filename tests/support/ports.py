"""Ports for the servers tests start, on a machine where many other processes (other
test workers, other suites) pick free ports at the same moment.

A port found free and let go is free only until someone binds it: a server started on
it a moment later can find it taken, and a test that polls the port then talks to
whoever took it (another `ledger serve` answers ``/v1/health`` just as well). So the
ports handed out here stay reserved by this process until its server binds them
(``benchlib.free_port``, shared with the benchmarks).

``listened_on_by`` tells whether the listening socket on a port belongs to a given
process or its children."""

import os
from pathlib import Path
from typing import Final

from benchlib import free_port, reserved_port

__all__ = ["free_port", "listened_on_by", "reserved_port"]

# /proc/net/tcp's state of a listening socket.
_LISTEN: Final = "0A"


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def _with_descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    family, waiting = set(), [pid]
    while waiting:
        current = waiting.pop()
        family.add(current)
        waiting.extend(children.get(current, ()))
    return family


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def listened_on_by(port: int, pid: int) -> bool:
    """Whether process ``pid`` (or one of its children) listens on 127.0.0.1's ``port``."""
    listening = _listening_inodes(port)
    if not listening:
        return False
    return any(listening & _socket_inodes(member) for member in _with_descendants(pid))
