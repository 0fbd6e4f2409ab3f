"""Dead connections noticed by the kernel: TCP keepalives and TCP_USER_TIMEOUT on a connection's socket."""

import socket

import asyncpg


def keep_alive(conn: asyncpg.Connection, tcp_user_timeout: float | None) -> None:
    """Have the kernel close `conn` when its peer stays silent for `tcp_user_timeout` seconds (None: never)."""
    # A connection whose peer went silent (a dead host, a dropped NAT entry, a failover) would be
    # noticed only by a query that times out, one by one. The kernel notices for us: keepalive
    # probes on an idle connection, and TCP_USER_TIMEOUT closing a connection whose data or probes
    # go unacknowledged that long. asyncpg has no option for these: its transport's socket takes them.
    sock = conn._transport.get_extra_info("socket")
    if tcp_user_timeout is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a unix socket has no network to lose
    probe_every = max(1, int(tcp_user_timeout / 2))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", probe_every),  # Linux; macOS calls it TCP_KEEPALIVE
        ("TCP_KEEPALIVE", probe_every),
        ("TCP_KEEPINTVL", probe_every),
        ("TCP_KEEPCNT", 2),
        ("TCP_USER_TIMEOUT", int(tcp_user_timeout * 1000)),  # Linux only, in milliseconds
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
