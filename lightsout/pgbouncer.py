"""A PgBouncer in transaction pooling mode in front of a PostgreSQL, for tests and CI.

It is how Azure Database for PostgreSQL serves a scaled-out app (its built-in PgBouncer,
port 6432): each transaction may run on another server connection, so session state
(`SET`, prepared statements, `LISTEN`, session advisory locks) does not follow a client.
`server_round_robin` hands transactions to the server connections in turn, so a
reliance on session state fails at once instead of now and then.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from psycopg.conninfo import conninfo_to_dict, make_conninfo

SBIN_PGBOUNCER = "/usr/sbin/pgbouncer"  # Debian's package; /usr/sbin is not on every PATH
INSTALL = "PgBouncer is not installed: `apt-get install -y pgbouncer` (Debian/Ubuntu)"
CONFIG = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {auth_file}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 1000
server_round_robin = 1
ignore_startup_parameters = extra_float_digits
logfile = {logfile}
pidfile = {pidfile}
"""


class PgBouncer:
    """A running PgBouncer: `url(dsn)` routes a server DSN through it."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, directory: Path) -> None:
        self.proc, self.port, self.directory = proc, port, directory

    def url(self, server_dsn: str) -> str:
        """The same database and user as `server_dsn`, reached through this PgBouncer."""
        parts = urlsplit(server_dsn)
        if parts.scheme in ("postgres", "postgresql"):
            user = parts.username or "postgres"
            return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{self.port}"))
        return make_conninfo(server_dsn, host="127.0.0.1", port=str(self.port))

    @property
    def log(self) -> str:
        return "".join(_read(self.directory / name) for name in ("stderr.log", "pgbouncer.log"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_pgbouncer(run_dir: Path, server_dsn: str, pool_size: int = 5) -> PgBouncer:
    """Start PgBouncer on a free 127.0.0.1 port for every database of `server_dsn`'s server."""
    pgbouncer = shutil.which("pgbouncer") or SBIN_PGBOUNCER
    if not Path(pgbouncer).exists():
        raise RuntimeError(INSTALL)
    server = conninfo_to_dict(server_dsn)
    port = _free_port()
    directory = (run_dir / f"pgbouncer-{port}").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    # Trust still needs the user listed in an auth_file.
    (directory / "users.txt").write_text(f'"{server.get("user") or "postgres"}" ""\n')
    config = directory / "pgbouncer.ini"
    config.write_text(
        CONFIG.format(
            host=server.get("host") or "127.0.0.1",
            port=server.get("port") or 5432,
            listen_port=port,
            auth_file=directory / "users.txt",
            pool_size=pool_size,
            logfile=directory / "pgbouncer.log",
            pidfile=directory / "pgbouncer.pid",
        )
    )
    command = [pgbouncer, str(config)]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        _give_to_postgres(directory)
        command = ["runuser", "-u", "postgres", "--", *command]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(directory / "stderr.log").open("ab"),
        start_new_session=True,
        cwd="/",
    )
    bouncer = PgBouncer(proc, port, directory)
    _wait_for(bouncer)
    return bouncer


def _give_to_postgres(directory: Path) -> None:
    user = pwd.getpwnam("postgres")
    for path in (directory, *directory.iterdir()):
        os.chown(path, user.pw_uid, user.pw_gid)
    # The user must also reach the directory through its parents.
    probe = ["runuser", "-u", "postgres", "--", "test", "-w", str(directory)]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        raise RuntimeError(f"the postgres user cannot write {directory}: use a reachable run dir")


def _wait_for(bouncer: PgBouncer) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", bouncer.port), timeout=1).close()
            return
        except OSError:
            pass
        if bouncer.proc.poll() is not None or time.monotonic() > deadline:
            log = bouncer.log
            bouncer.stop()
            raise RuntimeError(f"PgBouncer did not start on {bouncer.port}:\n{log}")
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
