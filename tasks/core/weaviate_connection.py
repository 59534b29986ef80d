"""Connecting to Weaviate with the settings' URL, gRPC port and optional API key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import weaviate
from weaviate.classes.init import AdditionalConfig, Auth, Timeout

from hybridops.tasks.core.settings import Settings


def connect(settings: Settings):
    """An open weaviate v4 client; the caller closes it (or use `weaviate_session`)."""
    url = urlparse(settings.weaviate_url)
    secure = url.scheme == "https"
    auth = Auth.api_key(settings.weaviate_api_key.get_secret_value()) if settings.weaviate_api_key else None
    return weaviate.connect_to_custom(
        http_host=url.hostname or "127.0.0.1",
        http_port=url.port or (443 if secure else 80),
        http_secure=secure,
        grpc_host=url.hostname or "127.0.0.1",
        grpc_port=settings.weaviate_grpc_port,
        grpc_secure=secure,
        auth_credentials=auth,
        additional_config=AdditionalConfig(timeout=Timeout(init=10, query=60, insert=120)),
        skip_init_checks=False,
    )


@contextmanager
def weaviate_session(settings: Settings) -> Iterator:
    client = connect(settings)
    try:
        yield client
    finally:
        client.close()
