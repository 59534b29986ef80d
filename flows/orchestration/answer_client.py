"""How `hybridops ask` reaches the answering service `serve` hosts: its address, token, identity and the request.

Light on purpose (stdlib HTTP, no model, no Weaviate client): the point of the service is that `ask` starts
fast. A quick health probe first; the service answers only a caller with the same answer-relevant settings
(namespace, store, index, models, retrieval, generation), so an `ask` configured differently never gets
another configuration's reply. `ask_service` returns None whenever the service does not answer (not running,
another home's token, other settings, too slow): the caller then answers in-process.
"""

from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Callable
from typing import NamedTuple

from pydantic import SecretStr

from hybridops.infra.local_secrets import read_or_create_secret
from hybridops.tasks.core.errors import ServiceUnavailableError, error_of_kind
from hybridops.tasks.core.settings import Settings

ANSWER_PATH = "/answer"
HEALTH_PATH = "/answer/health"
ERROR_HEADER = "X-Hybridops-Error"
"""Set on an error the answer path raised (its kind's exit code in the body), as opposed to a refused request."""
LOG_EXIT_HEADER = "X-Hybridops-Log-Exit"
"""Set when the interaction was not logged: 0 = the contract rejected it (quarantined), else the failure's exit code."""
PROBE_TIMEOUT_S = 1.0
ANSWER_SETTINGS = (
    "namespace", "home", "landing", "store", "weaviate_url", "weaviate_grpc_port", "s3_endpoint", "s3_bucket",
    "embedding_model", "embedding_bf16", "llm_model", "models_cache", "search_mode", "search_k", "hybrid_alpha",
    "max_new_tokens", "allow_base_fallback",
)
"""The settings an answer depends on: caller and service must agree on all of them."""


class ServedAnswer(NamedTuple):
    """The service's reply: `ask --json`'s object, and the log failure's exit code (None: nothing failed)."""

    data: dict
    log_exit: int | None


def token_file(settings: Settings):
    return settings.run_dir / "answer-service.token"


def service_token(settings: Settings, create: bool = False) -> SecretStr | None:
    """The shared secret: configured, else the one `serve` keeps under $HOME/run (created there by `serve`)."""
    if settings.answer_service_token is not None:
        return settings.answer_service_token
    path = token_file(settings)
    if create:
        return SecretStr(read_or_create_secret(path))
    try:
        return SecretStr(path.read_text().strip())
    except OSError:  # not there, or another user's 0600 file: answer in-process
        return None


def answer_fingerprint(settings: Settings) -> str:
    """Identity of what an answer depends on (see ANSWER_SETTINGS); secrets never enter it."""
    values = {name: str(getattr(settings, name)) for name in ANSWER_SETTINGS}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def ask_service(settings: Settings, question: str, note: Callable[[str], None] = lambda _: None) -> ServedAnswer | None:
    """The service's answer, or None when it does not answer (`note` says why, except when it is not running).

    An error of the answer path itself (Weaviate down, a champion that does not verify) is raised as its
    kind, exactly as answering in-process would raise it."""
    token = service_token(settings)
    if token is None:
        return None  # `serve` never ran a service under this home
    try:
        status, health, _ = _request(settings, "GET", HEALTH_PATH, None, {}, PROBE_TIMEOUT_S)
    except (OSError, http.client.HTTPException):
        return None  # not running (or not answering within the probe's timeout)
    if status != 200 or not isinstance(health, dict):
        note(f"the answering service on port {settings.answer_service_port} did not pass its health probe")
        return None
    if health.get("status") == "warming":  # a POST would wait behind the warm-up: answering here is no slower
        note("the answering service is still loading its models")
        return None
    if health.get("fingerprint") != answer_fingerprint(settings):
        note(f"the answering service on port {settings.answer_service_port} serves namespace "
             f"{health.get('namespace')!r} with other settings")
        return None
    headers = {"Authorization": f"Bearer {token.get_secret_value()}", "Content-Type": "application/json"}
    try:
        status, body, reply_headers = _request(settings, "POST", ANSWER_PATH, {"question": question}, headers,
                                               settings.answer_service_timeout_s)
    except ConnectionRefusedError:  # gone since the probe: the question never reached it
        note("the answering service stopped before the question reached it")
        return None
    except (OSError, http.client.HTTPException) as exc:  # sent: answering again here could log it twice
        raise ServiceUnavailableError(
            f"the answering service took the question but did not answer ({type(exc).__name__}: {exc}); it may "
            f"still answer and log it, so it is not answered again here") from None
    if status == 200 and isinstance(body, dict):
        log_exit = reply_headers.get(LOG_EXIT_HEADER)  # an http.client message: names match in any case
        return ServedAnswer(body, int(log_exit) if log_exit is not None else None)
    if reply_headers.get(ERROR_HEADER) and isinstance(body, dict):
        raise error_of_kind(int(body.get("exit_code", 1)), str(body.get("error")))
    note(f"the answering service refused the request (HTTP {status}: {body.get('error') if isinstance(body, dict) else body})")
    return None


def _request(settings: Settings, method: str, path: str, payload: dict | None, headers: dict[str, str],
             timeout: float) -> tuple[int, object, http.client.HTTPMessage]:
    connection = http.client.HTTPConnection("127.0.0.1", settings.answer_service_port, timeout=timeout)
    try:
        connection.request(method, path, body=None if payload is None else json.dumps(payload).encode(),
                           headers=headers)
        response = connection.getresponse()
        raw = response.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw[:200].decode(errors="replace")
        return response.status, body, response.headers
    finally:
        connection.close()
