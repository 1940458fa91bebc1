"""The workers' benchmark prints how many TCP SYNs the machine sent again during each
phase (from /proc/net/netstat): a SYN's first resend waits 1 s, the length of the
stalls seen in its two-worker phases."""

import socket

from benchlib import syn_retransmits

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
