"""What `hybridops up` exposes: every listener of the stack is on 127.0.0.1, except the two Weaviate ports
that Weaviate itself cannot bind (documented in infra/services.py)."""

from __future__ import annotations

import ipaddress
import os

import psutil

from hybridops.infra.services import WEAVIATE_UNBINDABLE, _owned_pid, local_services, weaviate_ports
from hybridops.tasks.core.settings import Settings


def listeners(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of the process group started as `pid`."""
    group = [p for p in psutil.process_iter(["pid"]) if _same_group(p, pid)]
    found = []
    for proc in group:
        for conn in proc.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                found.append((conn.laddr.ip, conn.laddr.port))
    return found


def _same_group(proc: psutil.Process, pid: int) -> bool:
    try:
        return os.getpgid(proc.pid) == os.getpgid(pid)
    except (ProcessLookupError, PermissionError, psutil.Error):
        return False


def test_every_listener_is_on_loopback_but_the_documented_weaviate_ports(stack: Settings) -> None:
    exposed = set()
    seen = 0
    for service in local_services(stack):
        pid = _owned_pid(stack, service)
        assert pid is not None, f"{service.name} is not running"
        for address, port in listeners(pid):
            seen += 1
            if not ipaddress.ip_address(address).is_loopback:
                exposed.add((service.name, port))
    assert seen >= 6  # Weaviate http/gossip/raft, MinIO api/console, Prefect
    ports = weaviate_ports(stack)
    assert exposed == {("weaviate", ports[name]) for name in WEAVIATE_UNBINDABLE}


def test_with_an_api_key_weaviate_refuses_anonymous_access(tmp_path) -> None:
    """A Weaviate of its own (no MinIO/Prefect needed) started the way `up` starts it, with a key set."""
    import time
    import urllib.error
    import urllib.request

    from pydantic import SecretStr

    from hybridops.infra.services import _start, down, healthy, private_stack_settings, weaviate_service

    cfg = private_stack_settings(tmp_path / "keyed", weaviate_api_key=SecretStr("k-" + os.urandom(8).hex()))
    service = weaviate_service(cfg)
    _start(cfg, service)
    try:
        deadline = time.monotonic() + 120
        while not healthy(service, cfg):  # the health check sends the key
            assert time.monotonic() < deadline, "keyed Weaviate did not become healthy"
            time.sleep(0.5)

        def status(headers: dict[str, str]) -> int:
            request = urllib.request.Request(f"{cfg.weaviate_url}/v1/schema", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert status({}) == 401
        assert status({"Authorization": "Bearer wrong"}) == 401
        assert status({"Authorization": f"Bearer {cfg.weaviate_api_key.get_secret_value()}"}) == 200
    finally:
        down(cfg)
