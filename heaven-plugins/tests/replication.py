"""A real primary and a real streaming standby (pg_basebackup -R) on loopback, from pgserver's binaries, for the
failover and read-replica tests. Every command bounded in time; every server stopped by `Node.stop`."""

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pgserver

BIN = Path(pgserver.__file__).parent / "pginstall" / "bin"
# Postgres will not run as root: as root, the servers run as the user pgserver makes for the same reason.
USER = "pgserver" if os.geteuid() == 0 else None
PASSWORD = "replication-test"
COMMAND_TIMEOUT = 30  # seconds any one command may take
# A small, fast server: no fsync (a crash of the machine is not what is tested; a crash of Postgres is,
# and the kernel keeps what was written), WAL enough for a base backup and a replica.
CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket}'
fsync = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 60
wal_level = replica
max_wal_senders = 4
wal_keep_size = 16MB
min_wal_size = 2MB
max_wal_size = 32MB
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
log_min_messages = warning
logging_collector = off
"""


def run(*command: str, **kwargs) -> str:
    """Run one of pgserver's binaries (as USER), within COMMAND_TIMEOUT; its output."""
    done = subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        user=USER,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
        **kwargs,
    )
    if done.returncode:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


def free_port() -> int:
    """A TCP port of loopback nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def owned(path: Path) -> Path:
    """`path`, made and given to USER."""
    path.mkdir(parents=True, exist_ok=True)
    if USER:
        entry = pwd.getpwnam(USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


class Node:
    """One Postgres server: its data directory, port and process."""

    def __init__(self, data: Path, port: int) -> None:
        self.data, self.port = data, port
        self.log = data.parent / f"{data.name}.log"

    def url(self, database: str = "postgres") -> str:
        """Its URL, as the replication user (a superuser)."""
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def configure(self, extra: str = "") -> None:
        """Write its settings, and `extra` lines after them."""
        conf = CONF.format(port=self.port, socket=self.data) + extra
        (self.data / "postgresql.conf").write_text(conf)

    def start(self) -> None:
        """Start it and wait until it accepts connections (-w: bounded by pg_ctl's own timeout)."""
        owned(self.log.parent)
        run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "20", "start")

    @property
    def pid(self) -> int:
        """The postmaster's process id."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self, mode: str = "fast") -> None:
        """Stop it (pg_ctl's mode: smart, fast, immediate); nothing when it is not running."""
        if (self.data / "postmaster.pid").exists():
            run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "20", "stop")

    def kill(self) -> None:
        """SIGKILL the postmaster and every process of it at once: a crash, nothing written on the way out."""
        pid = self.pid
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=5).stdout.split()
        for victim in [pid, *map(int, children)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid):
            assert time.monotonic() < deadline, "the killed postmaster is still there"
            time.sleep(0.01)
        (self.data / "postmaster.pid").unlink(missing_ok=True)

    def promote(self) -> None:
        """Make this standby a primary, and wait until it is one (bounded)."""
        run("pg_ctl", "-D", str(self.data), "-w", "-t", "20", "promote")

    def follow(self, primary: "Node") -> None:
        """Start this stopped server again as a standby of `primary`: an old primary stopped cleanly rejoining
        the new one after a failover, as an operator's switchover does (the new timeline followed)."""
        conninfo = f"host=127.0.0.1 port={primary.port} user=postgres password={PASSWORD}"
        self.configure(f"primary_conninfo = '{conninfo}'\nrecovery_target_timeline = 'latest'\n")
        signal_file = self.data / "standby.signal"
        signal_file.touch()
        if USER:
            shutil.chown(signal_file, USER, USER)
        self.start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of a process not ours is reaped by init; it is gone for Postgres' purposes.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


class Template:
    """A primary's data directory made once (initdb, the database made and migrated by `prepare`), copied for each
    pair: initdb takes seconds, a copy a fraction of one."""

    def __init__(self) -> None:
        self.root = owned(Path(tempfile.mkdtemp(prefix="pg-replication-")))
        os.chmod(self.root, 0o755)
        self.data = self.root / "template"
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD)
        if USER:
            shutil.chown(pwfile, USER)
        # -N: no fsync of the new files, and WAL in segments of 1 MB, not 16: a copy of it takes a fraction.
        run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--pwfile",
            str(pwfile),
            "-A",
            "scram-sha-256",
            "-N",
            "--wal-segsize=1",
        )
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host replication all 127.0.0.1/32 scram-sha-256\n"
        )
        self.pairs = 0

    def prepare(self, setup) -> None:
        """Start the template's server, call `setup(url)` (it makes databases, migrates them), stop it cleanly."""
        node = Node(self.data, free_port())
        node.configure()
        node.start()
        try:
            setup(node.url)
        finally:
            node.stop()

    def node(self, name: str) -> Node:
        """A new server's place, with a port of its own."""
        return Node(self.root / name, free_port())

    def primary(self, extra: str = "") -> Node:
        """A new primary copied from the template, started, `extra` in its settings."""
        self.pairs += 1
        node = self.node(f"primary-{self.pairs}")
        # cp as the servers' user: the copy is theirs with no chown after it.
        subprocess.run(["cp", "-a", str(self.data), str(node.data)], user=USER, check=True, timeout=COMMAND_TIMEOUT)
        node.configure(extra)
        node.start()
        return node

    def standby(self, primary: Node, extra: str = "") -> Node:
        """A streaming standby of `primary`: its base backup with the recovery settings (-R), started."""
        node = self.node(f"standby-{self.pairs}")
        run(
            "pg_basebackup",
            "-d",
            primary.url(),
            "-D",
            str(node.data),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-N",
            env={**os.environ, "PGPASSWORD": PASSWORD},
        )
        node.configure(extra)
        node.start()
        return node

    def remove(self) -> None:
        """Delete every data directory (their servers stopped first)."""
        shutil.rmtree(self.root, ignore_errors=True)
