"""Connecting to Weaviate with the settings' URL, gRPC port and optional API key.

With replicated collections (settings.weaviate_replicas > 1, i.e. the process's settings say topology=production:
`load_settings` finds it in the home `up` recorded it in, or HYBRIDOPS_TOPOLOGY says it) every collection
handle the client gives out reads and writes at settings.weaviate_consistency, so no caller has to remember it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import ParseResult, urlparse

import weaviate
from weaviate.classes.config import ConsistencyLevel
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.exceptions import WeaviateConnectionError, WeaviateGRPCUnavailableError, WeaviateStartUpError

from hybridops.tasks.core.settings import Settings


def connect(settings: Settings):
    """An open weaviate v4 client; the caller closes it (or use `weaviate_session`).

    Node 1 first; in the production topology, when it does not answer, the next node of the cluster on the same
    host (every node serves every collection), so losing node 1 does not stop the loop."""
    url = urlparse(settings.weaviate_url)
    node_1 = (url.port or (443 if url.scheme == "https" else 80), settings.weaviate_grpc_port)
    failures: list[Exception] = []
    for http_port, grpc_port in [node_1, *settings.weaviate_peer_entry_points]:
        try:
            client = _connect_to(settings, url, http_port, grpc_port)
        except (WeaviateStartUpError, WeaviateConnectionError, WeaviateGRPCUnavailableError) as exc:
            failures.append(exc)
            continue
        if settings.weaviate_replicas > 1:
            client.collections = _AtConsistency(client.collections, ConsistencyLevel(settings.weaviate_consistency))
        return client
    raise failures[0]


def _connect_to(settings: Settings, url: ParseResult, http_port: int, grpc_port: int):
    secure = url.scheme == "https"
    auth = Auth.api_key(settings.weaviate_api_key.get_secret_value()) if settings.weaviate_api_key else None
    return weaviate.connect_to_custom(
        http_host=url.hostname or "127.0.0.1",
        http_port=http_port,
        http_secure=secure,
        grpc_host=url.hostname or "127.0.0.1",
        grpc_port=grpc_port,
        grpc_secure=secure,
        auth_credentials=auth,
        additional_config=AdditionalConfig(timeout=Timeout(init=10, query=60, insert=120)),
        skip_init_checks=False,
    )


class _AtConsistency:
    """`client.collections` whose handles (`use`, `get`) carry one consistency level; the rest passes through."""

    def __init__(self, collections, level: ConsistencyLevel):
        self._collections = collections
        self._level = level

    def use(self, *args, **kwargs):
        return self._collections.use(*args, **kwargs).with_consistency_level(self._level)

    def get(self, *args, **kwargs):
        return self._collections.get(*args, **kwargs).with_consistency_level(self._level)

    def __getattr__(self, name: str):
        return getattr(self._collections, name)


@contextmanager
def weaviate_session(settings: Settings) -> Iterator:
    client = connect(settings)
    try:
        yield client
    finally:
        client.close()
