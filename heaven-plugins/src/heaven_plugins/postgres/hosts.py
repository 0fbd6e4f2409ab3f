"""Several hosts in a DSN (libpq's `h1,h2`): each tried with a share of connect_timeout, the last to answer first."""

from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg


def one_host_each(dsn: str) -> list[str]:
    """The DSN once for each host it names, in order (`u@h1:5432,h2:5433/db` -> `u@h1:5432/db`,
    `u@h2:5433/db`; `?host=h1,h2&port=...` alike); [dsn] when it names one."""
    parts = urlsplit(dsn)
    userinfo, at, where = parts.netloc.rpartition("@")
    hosts = where.split(",")
    if len(hosts) > 1:
        return [parts._replace(netloc=f"{userinfo}{at}{host}").geturl() for host in hosts]
    query = parse_qsl(parts.query, keep_blank_values=True)
    named = dict(query)
    hosts, ports = named.get("host", "").split(","), named.get("port", "").split(",")
    if len(hosts) < 2:
        return [dsn]
    each = []
    for i, host in enumerate(hosts):
        port = ports[min(i, len(ports) - 1)]
        rest = [(key, value) for key, value in query if key not in ("host", "port")]
        rest += [("host", host)] + ([("port", port)] if port else [])
        each.append(parts._replace(query=urlencode(rest, safe="/,")).geturl())
    return each


class Hosts:
    """`connect` for asyncpg's pool (and the probe) when a DSN names several hosts.

    asyncpg bounds its whole attempt at several hosts by one timeout: a first host that is gone without
    refusing (a machine off, its packets dropped) spends all of it, the next host is never tried, and a
    failover never completes while the dead host stays first in the list. libpq gives each host its own
    connect_timeout; here each gets an equal share of it, so a connection is still made or refused within
    connect_timeout, and the host that answered last is tried first: after a failover, new connections go
    straight to the new primary.
    """

    def __init__(self, dsn: str) -> None:
        self.dsns = one_host_each(dsn)
        self._last = 0  # the host that answered last

    # `timeout` is asyncpg.connect's own argument, which the pool passes on: shared out, not one deadline.
    async def connect(self, dsn: str = "", *, timeout: float = 60.0, **options) -> asyncpg.Connection:  # noqa: ASYNC109
        """A connection to the first host, the last that answered first, that takes it (with its
        target_session_attrs) within its share of `timeout`; else the last host's error."""
        count = len(self.dsns)
        error: Exception | None = None
        for i in range(count):
            host = (self._last + i) % count
            try:
                conn = await asyncpg.connect(self.dsns[host], timeout=timeout / count, **options)
            except Exception as exc:  # refused, silent, a standby, starting up: the next host may do
                error = exc
                continue
            self._last = host
            return conn
        raise error
