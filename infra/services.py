"""Start, check and stop the local stack (Prefect server, Weaviate, MinIO) as plain processes.

Each service leaves `run/<name>.pid`, `logs/<name>.log` and `data/<name>/` under $HYBRIDOPS_HOME.
`up` is idempotent and `down` stops exactly the processes `up` started (PID file + command line match).
MinIO starts with the landing webhook as its notification target (infra/minio_notifications.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hybridops.infra.binaries import MINIO, WEAVIATE, ensure_binary
from hybridops.infra.minio_notifications import (
    HEALTH_PATH,
    configure_bucket_notifications,
    ensure_webhook_token,
    minio_target_env,
    minio_token_env,
    notifies,
    webhook_url,
)
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.errors import HybridopsError, ServiceUnavailableError


class ServiceError(HybridopsError):
    """A service could not be started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class Service:
    name: str
    url: str
    health_path: str
    ports: dict[str, int]
    command: Callable[[], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    version: Callable[[], str] = lambda: ""
    marker: str = ""  # a string the process command line must contain for us to own it
    secret_env: Callable[[], dict[str, str]] = dict  # resolved only when starting: never held, never in argv
    probe: Callable[[], bool] | None = None  # health for a service that does not speak HTTP (PostgreSQL)
    stop_signal: int = signal.SIGTERM  # what `down` sends first (PostgreSQL: SIGINT, its fast shutdown)
    cwd: Path | None = None  # working folder (default $HYBRIDOPS_HOME)
    folders: tuple[Path, ...] = ()  # created before it starts (MinIO's drives)


def http_get(url: str, timeout: float = 3.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


def weaviate_headers(settings: Settings) -> dict[str, str]:
    if settings.weaviate_api_key:
        return {"Authorization": f"Bearer {settings.weaviate_api_key.get_secret_value()}"}
    return {}


WEAVIATE_UNBINDABLE = ("grpc", "data")
"""Weaviate 1.35 listens on every interface for these (its gRPC and cluster-data servers take no bind
address); everything else hybridops starts is on 127.0.0.1. Keep them firewalled, or set an API key."""


def weaviate_ports(settings: Settings) -> dict[str, int]:
    base = settings.weaviate_cluster_port
    return {"http": settings.weaviate_port, "grpc": settings.weaviate_grpc_port, "gossip": base, "data": base + 1,
            "raft": base + 2, "raft_rpc": base + 3}


def weaviate_service(settings: Settings) -> Service:
    """The embedded topology's single node: a raft cluster of one."""
    node = f"{settings.namespace}-node1"
    return weaviate_node(settings, "weaviate", settings.weaviate_url, weaviate_ports(settings),
                         {"RAFT_BOOTSTRAP_EXPECT": "1", "RAFT_JOIN": node, "CLUSTER_HOSTNAME": node})


def weaviate_node(settings: Settings, name: str, url: str, ports: dict[str, int], cluster: dict[str, str]) -> Service:
    """One weaviate-server process on 127.0.0.1 with its data under data/<name>; `cluster` says which raft
    cluster it forms or joins (its node name among them)."""
    env = {
        "PERSISTENCE_DATA_PATH": str(settings.home / "data" / name),
        "DEFAULT_VECTORIZER_MODULE": "none",
        "ENABLE_MODULES": "",
        "GRPC_PORT": str(ports["grpc"]),
        "CLUSTER_GOSSIP_BIND_PORT": str(ports["gossip"]),
        "CLUSTER_DATA_BIND_PORT": str(ports["data"]),
        "RAFT_PORT": str(ports["raft"]),
        "RAFT_INTERNAL_RPC_PORT": str(ports["raft_rpc"]),  # raft + 1: how local nodes find each other's
        "CLUSTER_IN_LOCALHOST": "true",
        "CLUSTER_ADVERTISE_ADDR": "127.0.0.1",
        "CLUSTER_BIND_ADDR": "127.0.0.1",  # gossip on loopback (gRPC and the data port have no bind setting in 1.35)
        "DISABLE_TELEMETRY": "true",
        "GO_PROFILING_DISABLE": "true",
        "LOG_LEVEL": "warning",
        "QUERY_DEFAULTS_LIMIT": "25",
    } | cluster  # CLUSTER_HOSTNAME in it: fixed across restarts, or the raft state is lost
    if settings.weaviate_api_key:
        env |= {
            "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false",
            "AUTHENTICATION_APIKEY_ENABLED": "true",
            "AUTHENTICATION_APIKEY_ALLOWED_KEYS": settings.weaviate_api_key.get_secret_value(),
            "AUTHENTICATION_APIKEY_USERS": "hybridops",
        }
    else:
        env["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"] = "true"

    def version() -> str:
        status, body = http_get(f"{url}/v1/meta", headers=weaviate_headers(settings))
        return json.loads(body).get("version", "") if status == 200 else ""

    return Service(
        name=name,
        url=url,
        health_path="/v1/.well-known/ready",
        ports=ports,
        command=lambda: [
            str(ensure_binary(WEAVIATE)), "--host", "127.0.0.1", "--port", str(ports["http"]), "--scheme", "http",
        ],
        env=env,
        version=version,
        marker="weaviate-server",
    )


def minio_service(settings: Settings, drives: int = 1) -> Service:
    """One MinIO process: over one folder, or erasure-coded over `drives` folders data/minio-erasure/drive1..N
    (MinIO expands the `{1...N}` itself; with 4 drives any one may be lost)."""
    ports = {"api": settings.s3_port, "console": settings.s3_console_port}
    data_dir = settings.home / "data" / ("minio" if drives == 1 else "minio-erasure")
    volumes = str(data_dir) if drives == 1 else f"{data_dir}/drive{{1...{drives}}}"
    return Service(
        name="s3",
        url=settings.s3_endpoint or "",
        health_path="/minio/health/live" if drives == 1 else "/minio/health/cluster",  # erasure sets up: write quorum
        folders=tuple(data_dir / f"drive{n}" for n in range(1, drives + 1)) if drives > 1 else (),
        ports=ports,
        command=lambda: [
            str(ensure_binary(MINIO)), "server", volumes,
            "--address", f"127.0.0.1:{ports['api']}", "--console-address", f"127.0.0.1:{ports['console']}",
        ],
        env={
            "MINIO_ROOT_USER": settings.minio_root_credentials()[0],
            "MINIO_ROOT_PASSWORD": settings.minio_root_credentials()[1],
            "MINIO_UPDATE": "off",
            "MINIO_BROWSER_REDIRECT": "off",
        } | minio_target_env(settings, data_dir)  # bucket notifications -> the webhook `serve` hosts
        # MinIO refuses erasure drives on the root disk; these folders all are. Here the erasure code survives a
        # lost folder, not a lost disk: give each drive its own disk in production.
        | ({"MINIO_ROOTDRIVE_THRESHOLD_SIZE": "1B"} if drives > 1 else {}),
        version=lambda: f"minio@{MINIO.version}",
        marker="minio",
        secret_env=lambda: minio_token_env(ensure_webhook_token(settings)),
    )


def prefect_service(settings: Settings) -> Service:
    port = settings.prefect_port
    base = settings.prefect_api_url.removesuffix("/").removesuffix("/api")

    def version() -> str:
        status, body = http_get(f"{base}/api/admin/version")
        return json.loads(body) if status == 200 else ""

    return Service(
        name="prefect",
        url=base,
        health_path="/api/health",
        ports={"api": port},
        # the launcher is `prefect server start` with the server's own API calls retried quickly on SQLite
        # lock conflicts (why: infra/prefect_server.py)
        command=lambda: [sys.executable, "-m", "hybridops.infra.prefect_server", "--host", "127.0.0.1",
                         "--port", str(port)],
        env={
            "PREFECT_HOME": str(settings.prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_UI_ENABLED": "true",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_API_URL": settings.prefect_api_url,
            "PREFECT_UI_API_URL": settings.prefect_api_url,
        },
        version=version,
        marker="prefect",
    )


def local_services(settings: Settings) -> list[Service]:
    """The services hybridops runs locally; S3 only when the endpoint is local (not AWS)."""
    services = [prefect_service(settings), weaviate_service(settings)]
    if settings.s3_endpoint:
        services.append(minio_service(settings))
    return services


# --- process bookkeeping ------------------------------------------------------------------------


def _pid_file(settings: Settings, service: Service) -> Path:
    return settings.run_dir / f"{service.name}.pid"


def _log_file(settings: Settings, service: Service) -> Path:
    return settings.home / "logs" / f"{service.name}.log"


def _owned_pid(settings: Settings, service: Service) -> int | None:
    """The PID from our PID file, if that process is alive and still the one we started."""
    path = _pid_file(settings, service)
    try:
        pid = int(path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        path.unlink(missing_ok=True)  # stale: the process is gone (crash or reboot)
        return None
    if service.marker not in cmdline:
        path.unlink(missing_ok=True)  # the PID was reused by someone else's process
        return None
    return pid


def is_running(settings: Settings, service: Service) -> bool:
    """`up` started this service and its process is still the one it started."""
    return _owned_pid(settings, service) is not None


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def healthy(service: Service, settings: Settings) -> bool:
    if service.probe is not None:
        return service.probe()
    headers = weaviate_headers(settings) if service.name.startswith("weaviate") else None
    status, _ = http_get(service.url.rstrip("/") + service.health_path, headers=headers)
    return status == 200


def _check_ports_free(service: Service) -> None:
    taken = [f"{label} {port}" for label, port in service.ports.items() if port_in_use(port)]
    if taken:
        raise ServiceError(
            f"{service.name}: port(s) {', '.join(taken)} on 127.0.0.1 already in use by a process hybridops did not "
            f"start. Stop it or choose other ports (see `hybridops config`)."
        )


def _start(settings: Settings, service: Service) -> subprocess.Popen:
    log_path = _log_file(settings, service)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    (settings.home / "data" / service.name).mkdir(parents=True, exist_ok=True)
    for folder in service.folders:
        folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **service.env, **service.secret_env()}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            service.command(), env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=service.cwd or settings.home, start_new_session=True,  # its own process group: `down` stops its children too
        )
    _pid_file(settings, service).write_text(f"{process.pid}\n")
    return process


def _log_tail(settings: Settings, service: Service, lines: int = 15) -> str:
    try:
        return "\n".join(_log_file(settings, service).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def up(settings: Settings, timeout: float = 180.0, on_event: Callable[[str], None] = lambda _: None) -> dict:
    """Start every local service not already running; wait until all are healthy."""
    report = start_services(settings, local_services(settings), timeout, on_event)
    prepare_storage(settings, on_event)
    return report


def start_services(settings: Settings, services: list[Service], timeout: float = 180.0,
                   on_event: Callable[[str], None] = lambda _: None) -> dict:
    """Start those of `services` not already running, all at once; wait until each is healthy."""
    report, launched = launch(settings, services, on_event)
    return report | await_healthy(settings, launched, timeout, on_event)


Launched = dict[str, tuple[Service, subprocess.Popen, float]]
"""Processes just started, by service name: (service, process, start time)."""


def launch(settings: Settings, services: list[Service],
           on_event: Callable[[str], None] = lambda _: None) -> tuple[dict, Launched]:
    """Start those of `services` not already running without waiting for them: (report of the running ones,
    the started ones for await_healthy). Every port is checked before anything starts, so a refusal leaves
    nothing behind."""
    settings.home.mkdir(parents=True, exist_ok=True)
    report: dict[str, dict] = {}
    pending = []
    for service in services:
        if _owned_pid(settings, service) is not None:
            report[service.name] = {"action": "already running"}
        else:
            _check_ports_free(service)
            pending.append(service)
    launched: Launched = {}
    for service in pending:
        launched[service.name] = (service, _start(settings, service), time.monotonic())
        on_event(f"starting {service.name} on {service.url}")
    return report, launched


def await_healthy(settings: Settings, launched: Launched, timeout: float = 180.0,
                  on_event: Callable[[str], None] = lambda _: None) -> dict:
    """Wait until every launched process is healthy (each timed from its own start); raise on an exit or timeout."""
    report: dict[str, dict] = {}
    waiting = dict(launched)
    deadline = time.monotonic() + timeout
    while waiting:
        for name, (service, process, t0) in list(waiting.items()):
            if healthy(service, settings):
                report[name] = {"action": "started", "seconds": round(time.monotonic() - t0, 2), "pid": process.pid}
                on_event(f"{name} healthy in {report[name]['seconds']} s")
                del waiting[name]
            elif process.poll() is not None:
                _pid_file(settings, service).unlink(missing_ok=True)
                raise ServiceError(f"{name} exited with code {process.returncode}:\n{_log_tail(settings, service)}")
            elif time.monotonic() > deadline:
                raise ServiceError(f"{name} not healthy after {timeout:.0f} s:\n{_log_tail(settings, service)}")
        time.sleep(0.2)
    return report


def prepare_storage(settings: Settings, on_event: Callable[[str], None] = lambda _: None) -> None:
    """The one place that creates storage roots, explicitly: the default landing folder (when no landing zone
    is configured) and, on the local MinIO, the default bucket. A refresh never creates either: a missing
    landing root is an error there, never an empty landing zone. A landing prefix on the local MinIO also
    gets its bucket notifications (a refusal is a warning: the watcher's fallback listing still sees all)."""
    if settings.landing is None:
        Path(settings.landing_uri).mkdir(parents=True, exist_ok=True)
    if settings.s3_endpoint:
        from hybridops.tasks.core.object_store import S3Store

        S3Store(f"s3://{settings.s3_bucket}", settings).ensure_bucket()
        on_event(f"bucket {settings.s3_bucket} ready")
    if notifies(settings):
        try:
            outcome = configure_bucket_notifications(settings)
        except ServiceUnavailableError as exc:
            on_event(f"warning: {exc}; until then only the watcher's fallback listing notices landings")
        else:
            on_event(f"bucket notifications for {settings.landing_uri}: {outcome}")


def down(settings: Settings, timeout: float = 30.0, services: list[Service] | None = None) -> dict:
    """Stop exactly what `up` started (by PID file), gracefully first, then by force; in the order given."""
    report: dict[str, dict] = {}
    for service in local_services(settings) if services is None else services:
        report[service.name] = stop_service(settings, service, timeout)
    return report


def stop_service(settings: Settings, service: Service, timeout: float = 30.0) -> dict:
    """Stop one service `up` started (nothing when its PID file names no process of ours)."""
    pid = _owned_pid(settings, service)
    if pid is None:
        return {"action": "not running"}
    _signal_group(pid, service.stop_signal)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    forced = _alive(pid)
    if forced:
        _signal_group(pid, signal.SIGKILL)
    _pid_file(settings, service).unlink(missing_ok=True)
    return {"action": "stopped", "pid": pid, "forced": forced}


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # started with start_new_session, so pgid == pid
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap if it is our child
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def status(settings: Settings, services: list[Service] | None = None) -> dict:
    """Health, URL and version of each service, managed by hybridops or not."""
    report: dict[str, dict] = {}
    for service in local_services(settings) if services is None else services:
        is_healthy = healthy(service, settings)
        report[service.name] = {
            "healthy": is_healthy,
            "url": service.url,
            "version": service.version() if is_healthy else "",
            "managed_pid": _owned_pid(settings, service),
        }
    if not settings.s3_endpoint:
        report["s3"] = {"healthy": _aws_bucket_reachable(settings), "url": "aws", "version": "aws-s3"}
    return {"services": report, "landing_webhook": landing_webhook_status(settings), "home": str(settings.home)}


def landing_webhook_status(settings: Settings) -> dict:
    """Whether this namespace's `serve` hosts the landing webhook: reported beside the services, not among
    them, as it runs only while `serve` does (up, down, off for a folder landing zone, or taken by another
    namespace's `serve` on the same port)."""
    info: dict = {"port": settings.landing_webhook_port, "url": webhook_url(settings)}
    if not settings.landing_uri.startswith("s3://"):
        return info | {"state": "off", "reason": "the landing zone is a folder"}
    code, body = http_get(webhook_url(settings, HEALTH_PATH), timeout=1.0)
    if code != 200:
        return info | {"state": "down"}
    try:
        health = json.loads(body)
        serving = health["namespace"]
    except (ValueError, KeyError, TypeError):
        return info | {"state": "taken", "serving_namespace": None}
    if serving != settings.namespace:
        return info | {"state": "taken", "serving_namespace": serving}
    return info | {"state": "up"} | {k: v for k, v in health.items() if k != "namespace"}


def _aws_bucket_reachable(settings: Settings) -> bool:
    from hybridops.tasks.core.object_store import s3_client

    try:
        s3_client(settings).head_bucket(Bucket=settings.s3_bucket)
        return True
    except Exception:  # any botocore failure means "not healthy" here; the reason is not a secret but noise
        return False


# --- a private stack on free ports (tests, benchmarks) -------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_block(size: int) -> int:
    """The first of `size` consecutive free ports (Weaviate's internal cluster ports)."""
    for _ in range(200):
        base = free_port()
        if base + size < 65535 and all(not port_in_use(base + i) for i in range(size)):
            return base
    raise RuntimeError("no block of free ports found")


def private_stack_settings(home: Path, **overrides) -> Settings:
    """Settings for a whole stack of its own under `home` on fresh free ports (beside any other stack)."""
    values = dict(
        home=home,
        namespace="hybridops",
        weaviate_url=f"http://127.0.0.1:{free_port()}",
        weaviate_grpc_port=free_port(),
        weaviate_cluster_port=free_port_block(4),
        s3_endpoint=f"http://127.0.0.1:{free_port()}",
        s3_console_port=free_port(),
        prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
        landing_webhook_port=free_port(),
        answer_service_port=free_port(),
    )
    return Settings(**(values | overrides))


@contextlib.contextmanager
def private_stack(prefix: str, on_event: Callable[[str], None] = lambda _: None, *,
                  make_settings: Callable[..., Settings] = private_stack_settings, start: Callable | None = None,
                  stop: Callable | None = None, **overrides) -> Iterator[Settings]:
    """Services of our own under a temp home on free ports (benchmarks), stopped and deleted afterwards.
    `s3_endpoint=""` leaves MinIO out (landing zone and store are then folders under the home). `make_settings`,
    `start`, `stop`: another topology's (infra/topology.py private_production_stack)."""
    start, stop = start or up, stop or down
    with tempfile.TemporaryDirectory(prefix=prefix) as home:
        settings = make_settings(Path(home), **overrides)
        clock = time.perf_counter()
        try:
            start(settings, on_event=on_event)
            on_event(f"private stack up in {time.perf_counter() - clock:.0f}s under {home}")
            yield settings
        finally:
            stop(settings)
            on_event("private stack stopped")
