"""A streaming standby of the bench's Postgres (pgserver's cluster): pg_basebackup -R over its unix socket, started
on a socket of its own, as the cluster's own user; every command bounded in time. For replica.py."""

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

COMMAND_TIMEOUT = 120  # seconds pg_basebackup, or pg_ctl, may take


class Standby:
    """A streaming standby of the pgserver cluster in `primary_data` (pg_basebackup -R over its unix socket), in
    `data`, listening on its own socket there; run as the cluster's own user. Made afresh each run."""

    def __init__(self, primary_data: Path, data: Path, port: int) -> None:
        import pgserver

        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.primary_data, self.data, self.port = primary_data, data, port
        self.user = primary_data.owner()  # pgserver's unprivileged user when we are root, else ourselves

    def _run(self, *command: str) -> None:
        user = self.user if os.geteuid() == 0 else None
        done = subprocess.run(
            [str(self.bin / command[0]), *command[1:]],
            user=user,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self, primary_dsn: str, core: int) -> str:
        """Back the primary up into `data`, start the standby pinned to `core`, wait until it streams; its DSN."""
        import database

        with contextlib.suppress(RuntimeError):  # a server left running by a run that was killed
            self.stop()
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(mode=0o700)
        shutil.chown(self.data, self.user)
        self._run(
            "pg_basebackup",
            *("-h", str(self.primary_data), "-p", "5432", "-U", "postgres"),  # pgserver's socket and port
            *("-D", str(self.data), "-R", "-X", "stream", "-c", "fast"),
        )
        # Its own socket folder and port, no TCP: as pgserver serves the primary.
        options = f"-h '' -k {self.data} -p {self.port}"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.data / "log"), "-o", options, "-w", "-t", "60", "start"
        )
        database.pin(self.data, core)
        dsn = re.sub(r"host=[^&]*", f"host={self.data}", primary_dsn) + f"&port={self.port}"
        asyncio.run(_streaming(primary_dsn, dsn))
        return dsn

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")


def fetchval(dsn: str, query: str):
    """One value of `query`, over a connection of its own."""
    return asyncio.run(_fetchval(dsn, query))


async def _fetchval(dsn: str, query: str):
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(query, timeout=10)
    finally:
        await conn.close()


async def _streaming(primary: str, standby: str, within: float = 30.0) -> None:
    """Until the primary streams to the standby and the standby, in recovery, has replayed all it was sent."""
    deadline = time.monotonic() + within
    streaming = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND replay_lsn = sent_lsn"
    while not (await _fetchval(primary, streaming) and await _fetchval(standby, "SELECT pg_is_in_recovery()")):
        if time.monotonic() > deadline:
            raise SystemExit(f"replica: the standby did not stream within {within} s")
        await asyncio.sleep(0.2)
