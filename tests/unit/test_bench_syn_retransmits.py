"""The workers' benchmark prints which of the kernel's TCP counters a stall is looked for
in moved during each phase (from /proc/net/netstat): a SYN's first resend waits 1 s, the
length of the stalls seen in its two-worker phases; a full listen queue drops
connections."""

import socket

from benchlib import syn_retransmits, tcp_counters, tcp_stall_counters_moved

NETSTAT = (
    "TcpExt: SyncookiesSent TCPSynRetrans TCPTimeouts\n"
    "TcpExt: 0 9 15\n"
    "IpExt: InNoRoutes TCPSynRetrans\n"
    "IpExt: 0 4\n"
)


def test_the_count_is_tcpexts_tcpsynretrans() -> None:
    assert syn_retransmits(NETSTAT) == 9


def test_the_machines_count_reads_and_never_goes_down() -> None:
    before = syn_retransmits()
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()),
    ):
        pass
    assert syn_retransmits() >= before >= 0


def test_the_counters_are_tcpexts_by_name() -> None:
    assert tcp_counters(NETSTAT) == {"SyncookiesSent": 0, "TCPSynRetrans": 9, "TCPTimeouts": 15}


def test_a_phase_names_the_stall_counters_that_rose_and_by_how_much() -> None:
    before = {"TCPSynRetrans": 9, "ListenOverflows": 0, "ListenDrops": 0, "TCPTimeouts": 15}
    after = {"TCPSynRetrans": 10, "ListenOverflows": 2, "ListenDrops": 2, "TCPTimeouts": 15}
    moved = tcp_stall_counters_moved(before, after)
    assert moved == "ListenOverflows +2, ListenDrops +2, TCPSynRetrans +1"
    assert tcp_stall_counters_moved(after, after) == "none moved"
