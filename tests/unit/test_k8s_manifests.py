"""infra/k8s/ is what a user deploys to Kubernetes: the manifests and Helm values must parse, carry the fields
Kubernetes requires, pin the versions hybridops builds and tests (infra/binaries.py, the installed Prefect), and
match what the local production topology runs (same env names, ports, replication). No kubectl needed."""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from hybridops.infra.binaries import WEAVIATE_VERSION
from hybridops.infra.postgres import DATABASE_URL_VAR, prefect_on_postgres
from hybridops.infra.topology import production_services, weaviate_cluster_node
from hybridops.infra.work_pool import worker_service
from hybridops.tasks.core.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
PRODUCTION = Settings(topology="production")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def _documents(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def _objects() -> list[dict]:
    return [doc for name in ("settings.yaml", "worker.yaml") for doc in _documents(name)]


def _by_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in _objects() if doc["kind"] == kind}


@pytest.mark.parametrize("doc", _objects(), ids=lambda d: f"{d.get('kind')}/{d.get('metadata', {}).get('name')}")
def test_every_object_has_the_required_fields(doc: dict) -> None:
    assert doc["apiVersion"] and doc["kind"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", doc["metadata"]["name"])
    if doc["kind"] not in CLUSTER_SCOPED:
        assert doc["metadata"]["namespace"] == "hybridops"


def test_worker_deployment_is_consistent_and_pinned() -> None:
    deployment = _by_kind("Deployment")["prefect-worker"]
    spec = deployment["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["template"]["spec"]["serviceAccountName"] in _by_kind("ServiceAccount")
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == f"prefecthq/prefect:{version('prefect')}-python3.11-kubernetes"
    assert container["resources"]["limits"]["memory"]
    args = container["args"]
    assert args[:3] == ["prefect", "worker", "start"] and "--with-healthcheck" in args
    # The same worker settings the local production topology gives its `prefect worker` processes.
    local = worker_service(PRODUCTION, 1)
    names = {env["name"] for env in container["env"]}
    assert {"PREFECT_API_URL", "PREFECT_WORKER_QUERY_SECONDS", "PREFECT_SERVER_ANALYTICS_ENABLED"} <= names
    assert names - {"PREFECT_WORKER_PREFETCH_SECONDS"} <= set(local.env)
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == local.health_path and probe["port"] == 8080  # the worker's default webserver port
    for ref in (env["valueFrom"]["configMapKeyRef"] for env in container["env"] if "valueFrom" in env):
        assert ref["key"] in _by_kind("ConfigMap")[ref["name"]]["data"]


def test_rbac_binds_existing_role_and_account() -> None:
    for binding in _by_kind("RoleBinding").values():
        assert binding["roleRef"]["name"] in _by_kind("Role")
        for subject in binding["subjects"]:
            assert subject["name"] in _by_kind("ServiceAccount")


def test_settings_configmap_and_secret_name_real_settings() -> None:
    fields = set(Settings.model_fields)
    config = _by_kind("ConfigMap")["hybridops-settings"]["data"]
    secret = _by_kind("Secret")["hybridops-secrets"]["stringData"]
    for key in [*config, *secret]:
        if key.startswith("HYBRIDOPS_") and key != "HYBRIDOPS_CODE_DIR":
            assert key.removeprefix("HYBRIDOPS_").lower() in fields, key
    assert not set(config) & set(secret)
    assert int(config["HYBRIDOPS_WEAVIATE_GRPC_PORT"]) == Settings().weaviate_grpc_port
    assert config["HYBRIDOPS_PREFECT_API_URL"].endswith(f":{Settings().prefect_port}/api")
    assert {"HYBRIDOPS_S3_ACCESS_KEY", "HYBRIDOPS_S3_SECRET_KEY", "HYBRIDOPS_WEAVIATE_API_KEY"} <= set(secret)


def test_job_template_declares_its_variables_and_uses_the_settings() -> None:
    template = json.loads((K8S / "base-job-template.json").read_text())
    text = json.dumps(template["job_configuration"])
    declared = set(template["variables"]["properties"])
    assert set(re.findall(r"\{\{ *(\w+) *\}\}", text)) <= declared
    job = template["job_configuration"]["job_manifest"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert refs == set(_by_kind("ConfigMap")) | set(_by_kind("Secret"))
    assert template["variables"]["properties"]["service_account_name"]["default"] in _by_kind("ServiceAccount")


def test_weaviate_values_match_the_local_cluster() -> None:
    values = yaml.safe_load((K8S / "weaviate-values.yaml").read_text())
    assert values["image"]["tag"] == WEAVIATE_VERSION.lstrip("v")
    assert values["replicas"] == PRODUCTION.weaviate_nodes
    env = {key: str(value).lower() for key, value in values["env"].items()}
    assert int(env["RAFT_BOOTSTRAP_EXPECT"]) == values["replicas"]
    assert int(env["REPLICATION_MINIMUM_FACTOR"]) == PRODUCTION.weaviate_replicas
    assert int(env["CLUSTER_DATA_BIND_PORT"]) == int(env["CLUSTER_GOSSIP_BIND_PORT"]) + 1  # the local layout too
    local = weaviate_cluster_node(PRODUCTION, 2, ["127.0.0.1:7946"]).env
    assert set(env) - {"PERSISTENCE_LSM_ACCESS_STRATEGY", "ASYNC_REPLICATION_DISABLED"} <= set(local)
    for name in ("REPLICATION_MINIMUM_FACTOR", "REPLICATION_FORCE_DELETION_STRATEGY", "ASYNC_REPLICATION_FREQUENCY",
                 "RAFT_BOOTSTRAP_EXPECT", "DISABLE_TELEMETRY", "GO_PROFILING_DISABLE"):
        assert env[name] == local[name].lower(), name
    assert values["grpcService"]["enabled"] and values["modules"] == {}
    assert values["authentication"]["anonymous_access"]["enabled"] is False


def test_prefect_server_values_match_the_local_server() -> None:
    values = yaml.safe_load((K8S / "prefect-server-values.yaml").read_text())
    assert values["server"]["image"]["prefectTag"] == f"{version('prefect')}-python3.11"
    env = {item["name"]: item for item in values["server"]["env"]}
    local = prefect_on_postgres(PRODUCTION)
    assert set(env) <= set(local.env) | {DATABASE_URL_VAR}
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"]["value"] == local.env["PREFECT_SERVER_ANALYTICS_ENABLED"]
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"]["valueFrom"]["secretKeyRef"]["name"] == values["secret"]["name"]
    assert values["postgresql"]["enabled"] is False  # a managed PostgreSQL, as locally the OS package's


def test_local_production_topology_ports_are_distinct() -> None:
    ports = [port for service in production_services(PRODUCTION) for port in service.ports.values()]
    assert len(ports) == len(set(ports))


def test_images_are_pinned() -> None:
    dockerfile = (K8S / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert ":" in base and not base.endswith(":latest")
    template = json.loads((K8S / "base-job-template.json").read_text())
    image = template["variables"]["properties"]["image"]["default"]
    assert ":" in image and not image.endswith(":latest")
