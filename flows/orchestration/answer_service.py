"""The answering service: `hybridops serve` keeps the embedder, base LLM and champion adapter loaded and answers
`hybridops ask` over HTTP on 127.0.0.1 with the very answer function `ask` runs in-process (tasks/behaviour/answer.py).

POST /answer `{"question": ...}` -> `ask --json`'s object (with `answered_by: "service"`), the interaction
logged exactly as in-process; GET /answer/health -> status and identity (see answer_client.py). A POST counts
only with the shared token (`Authorization: Bearer`, constant-time compare, 401 otherwise), as the landing
webhook does: loopback alone would let any local user ask and write the interaction log.

The champion is checked on every request, not reloaded on promoted/rolled-back events: the pointer is the
truth and reading it is one small GET plus a listing of the version's files, which the registry's per-process
cache compares before reusing the merged model (tasks/behaviour/adapter_loading.py). Events reach nobody when
the Prefect server is down (a CLI `adapters promote` then sends none) and a subscription can drop; the pointer
check sees every move, a hand-repaired pointer included, on the very next request, and loads a new champion once.

Requests are answered one at a time: the models are shared, and two generations at once on a small CPU box
take longer than one after the other. The health probe never waits for that lock.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from hybridops.flows.orchestration.answer_client import (
    ANSWER_PATH,
    ERROR_HEADER,
    HEALTH_PATH,
    LOG_EXIT_HEADER,
    answer_fingerprint,
    service_token,
)
from hybridops.flows.orchestration.loopback_http import JsonHandler, LoopbackServer
from hybridops.tasks.behaviour.answer import Answer, ask, load_answering_model
from hybridops.tasks.behaviour.interactions import warm_contract
from hybridops.tasks.behaviour.question import checked_question
from hybridops.tasks.core.errors import BadInputError, HybridopsError, describe, exit_code
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.embeddings import load_embedder

log = logging.getLogger(__name__)

HTTP_STATUS = {BadInputError.exit_code: 400, 3: 503, 4: 500, 5: 409}
"""An answer-path error's HTTP status by its kind's exit code (anything else: 500)."""


class AnswerRequest(BaseModel):
    """What a POST /answer carries."""

    model_config = ConfigDict(extra="forbid")

    question: str


def parse_request(body: bytes) -> str:
    """The checked question of a request body; BadInputError says what is wrong (never quoting the body)."""
    try:
        request = AnswerRequest.model_validate_json(body)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem.get("loc", ())) or "body"
        raise BadInputError(f'expected {{"question": "..."}}: {where}: {problem.get("msg")}') from None
    return checked_question(request.question)


def warm_answer_path(settings: Settings) -> None:
    """Load what every answer needs: base model + champion, the embedder, the interaction contract."""
    contract = warm_contract()
    load_answering_model(settings)
    load_embedder(settings).embed(["warm up"])
    contract.join()


class AnswerService:
    """The HTTP server plus the one lock every answer takes; `answer` and `warm` are injectable for tests."""

    def __init__(self, settings: Settings, token: SecretStr, answer: Callable[[str], Answer] | None = None,
                 warm: Callable[[], None] | None = None):
        self.settings = settings
        self.token = token
        self._answer = answer or (lambda question: ask(settings, question))
        self._warm = warm or (lambda: warm_answer_path(settings))
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self.status = "warming"
        self.answered = 0
        self.adapter: str | None = None

    @property
    def port(self) -> int:
        return self._server.port if self._server else self.settings.answer_service_port

    def start(self, port: int | None = None) -> AnswerService:
        """Listen on 127.0.0.1 (the settings' port unless given; 0 picks a free one; OSError if taken) and warm
        the models in the background (the first request waits for them)."""
        self._server = _Server(self.settings.answer_service_port if port is None else port, _Handler)
        self._server.service = self
        threading.Thread(target=self._warm_up, name="answer-warm-up", daemon=True).start()
        self._server.start("answer-service")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def _warm_up(self) -> None:
        with self._lock:
            try:
                self._warm()
                self.status = "ok"
            except Exception as exc:  # noqa: BLE001 - each request loads what it needs and reports its own error
                self.status = f"warm-up failed: {describe(exc)}"
                log.warning("answering service: %s", self.status)

    def answer(self, question: str) -> Answer:
        """One answer, serialised with every other; the interaction is logged as in-process `ask` logs it."""
        with self._lock:
            answer = self._answer(question)
            self.answered += 1
            self.adapter = answer.adapter
        answer.answered_by = "service"
        return answer

    def authorized(self, header: str) -> bool:
        return hmac.compare_digest(header.encode(), f"Bearer {self.token.get_secret_value()}".encode())

    def health(self) -> dict:
        return {"status": self.status, "namespace": self.settings.namespace, "port": self.port,
                "fingerprint": answer_fingerprint(self.settings), "adapter": self.adapter, "answered": self.answered}

    def __enter__(self) -> AnswerService:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(JsonHandler):
    server: _Server
    server_version = "hybridops-answer-service"
    max_body = 64 * 1024  # a question is at most 4,000 characters
    timeout = 30

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == HEALTH_PATH:
            return self.send_json(200, self.server.service.health())
        self.send_json(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        service = self.server.service
        body = self.authorized_body(ANSWER_PATH, service.authorized)
        if body is None:
            return None
        try:
            answer = service.answer(parse_request(body))
        except Exception as exc:  # noqa: BLE001 - the caller gets the error of its kind, as in-process
            if not isinstance(exc, HybridopsError):  # a bug, not a kind: its traceback stays in serve's log
                log.exception("answering service: unexpected error")
            code = exit_code(exc)
            return self.send_json(HTTP_STATUS.get(code, 500), {"error": describe(exc), "exit_code": code},
                                  {ERROR_HEADER: "answer"})
        log_exit = answer.log_exit_code
        self.send_json(200, answer.model_dump(mode="json"), {} if log_exit is None else {LOG_EXIT_HEADER: str(log_exit)})


class _Server(LoopbackServer):
    service: AnswerService


def start_answer_service(settings: Settings,
                         on_event: Callable[[str], None] = lambda _: None) -> AnswerService | None:
    """`serve`'s answering service (None when switched off or its port is taken, with the reason told)."""
    if not settings.answer_service:
        return None
    try:
        service = AnswerService(settings, service_token(settings, create=True)).start()
    except OSError as exc:
        on_event(f"answering service off: port {settings.answer_service_port} on 127.0.0.1 unavailable ({exc}); "
                 "`hybridops ask` answers in-process")
        return None
    on_event(f"answering service on 127.0.0.1:{service.port}{ANSWER_PATH} (loading the models)")
    return service
