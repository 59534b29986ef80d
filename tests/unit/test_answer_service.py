"""The answering service and its client on plain data: request validation, auth, errors of their kind, the log
failure, serialisation and the client's fallback decisions, with the real HTTP server on a free port in this
process and a stub answer function (no model, no services)."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from hybridops.flows.orchestration import answer_client
from hybridops.flows.orchestration.answer_client import (
    ANSWER_PATH,
    ERROR_HEADER,
    HEALTH_PATH,
    LOG_EXIT_HEADER,
    answer_fingerprint,
    ask_service,
    service_token,
)
from hybridops.flows.orchestration.answer_service import AnswerService, parse_request
from hybridops.tasks.behaviour.answer import Answer
from hybridops.tasks.behaviour.question import MAX_QUESTION_CHARS
from hybridops.tasks.core.errors import BadInputError, IntegrityError, ServiceUnavailableError
from hybridops.tasks.core.settings import Settings

QUESTION = "How many days do I have to return an item?"


def stub_answer(question: str) -> Answer:
    return Answer(answer=f"45 days ({question})", sources=["policies/refunds.md"], format_ok=True, adapter=None,
                  retrieved=["policies/refunds.md"], interaction_id="20261206T000000Z-0000abcd", latency_ms=1.0,
                  logged=True)


@pytest.fixture
def served(cfg: Settings):
    """(settings pointing at the service, the service) with the stub answer; the token as `serve` makes it."""
    service = AnswerService(cfg, service_token(cfg, create=True), answer=stub_answer, warm=lambda: None).start(port=0)
    try:
        yield cfg.model_copy(update={"answer_service_port": service.port}), service
    finally:
        service.stop()


def post(port: int, body: bytes, token: str | None, path: str = ANSWER_PATH, length: bool = True):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if length:
        connection.request("POST", path, body=body, headers=headers)
    else:  # no Content-Length header at all
        connection.putrequest("POST", path)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, json.loads(data) if data else None, response.headers


# --- requests ------------------------------------------------------------------------------------------------


def test_a_request_is_one_question_object() -> None:
    assert parse_request(json.dumps({"question": f"  {QUESTION}\n"}).encode()) == QUESTION


@pytest.mark.parametrize("body, reason", [
    (b"not json", "expected"),
    (b"[]", "expected"),
    (b"{}", "question"),
    (json.dumps({"question": 3}).encode(), "question"),
    (json.dumps({"question": QUESTION, "k": 50}).encode(), "k"),
    (json.dumps({"question": "   "}).encode(), "empty"),
    (json.dumps({"question": "x" * (MAX_QUESTION_CHARS + 1)}).encode(), "at most"),
])
def test_bad_requests_are_bad_input_saying_why(body: bytes, reason: str) -> None:
    with pytest.raises(BadInputError, match=reason):
        parse_request(body)


# --- the server -------------------------------------------------------------------------------------------------


def test_only_the_token_holder_gets_an_answer(served) -> None:
    cfg, service = served
    body = json.dumps({"question": QUESTION}).encode()
    assert post(service.port, body, None)[0] == 401
    assert post(service.port, body, "wrong-token-of-enough-length")[0] == 401
    status, data, _ = post(service.port, body, service.token.get_secret_value())
    assert status == 200 and data["answered_by"] == "service" and data["answer"].startswith("45 days")
    assert service.answered == 1


def test_refused_requests_say_why(served) -> None:
    _, service = served
    token = service.token.get_secret_value()
    assert post(service.port, b"{}", token, path="/elsewhere")[0] == 404
    assert post(service.port, b"", token, length=False)[0] == 411
    assert post(service.port, b"x" * (service._server.RequestHandlerClass.max_body + 1), token)[0] == 413
    status, data, headers = post(service.port, b'{"question": ""}', token)
    assert status == 400 and data == {"error": "the question is empty", "exit_code": 2}
    assert headers[ERROR_HEADER]


def test_health_is_open_and_names_what_it_serves(served) -> None:
    cfg, service = served
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    connection.request("GET", HEALTH_PATH)
    health = json.loads(connection.getresponse().read())
    assert health["status"] == "ok" and health["namespace"] == cfg.namespace
    assert health["fingerprint"] == answer_fingerprint(cfg) and "token" not in json.dumps(health)


@pytest.mark.parametrize("error, status, code", [
    (ServiceUnavailableError("Weaviate: connection refused"), 503, 3),
    (IntegrityError("champion adapter v1 cannot be used"), 500, 4),
])
def test_answer_path_errors_keep_their_kind(cfg: Settings, error, status: int, code: int) -> None:
    def failing(question: str) -> Answer:
        raise error

    with AnswerService(cfg, SecretStr("t" * 20), answer=failing, warm=lambda: None).start(port=0) as service:
        got, data, headers = post(service.port, json.dumps({"question": QUESTION}).encode(), "t" * 20)
    assert (got, data["exit_code"], data["error"]) == (status, code, str(error)) and headers[ERROR_HEADER]


def test_a_failed_log_write_travels_as_its_exit_code(cfg: Settings) -> None:
    def unlogged(question: str) -> Answer:
        answer = stub_answer(question).model_copy(update={"logged": False, "interaction_id": None,
                                                          "log_error": "store unavailable"})
        answer._log_failure = ServiceUnavailableError("store unavailable")
        return answer

    with AnswerService(cfg, SecretStr("t" * 20), answer=unlogged, warm=lambda: None).start(port=0) as service:
        status, data, headers = post(service.port, json.dumps({"question": QUESTION}).encode(), "t" * 20)
    assert status == 200 and data["logged"] is False and headers[LOG_EXIT_HEADER] == "3"


def test_answers_are_serialised(cfg: Settings) -> None:
    inside, overlaps = [], []

    def slow(question: str) -> Answer:
        inside.append(question)
        if len(inside) > 1:
            overlaps.append(question)
        time.sleep(0.2)
        inside.remove(question)
        return stub_answer(question)

    with AnswerService(cfg, SecretStr("t" * 20), answer=slow, warm=lambda: None).start(port=0) as service:
        statuses = []
        threads = [threading.Thread(target=lambda i=i: statuses.append(
            post(service.port, json.dumps({"question": f"q{i}"}).encode(), "t" * 20)[0])) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [200] * 4 and overlaps == [] and service.answered == 4


def test_health_answers_while_the_models_warm(cfg: Settings) -> None:
    release = threading.Event()
    with AnswerService(cfg, SecretStr("t" * 20), answer=stub_answer, warm=release.wait).start(port=0) as service:
        connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=5)
        connection.request("GET", HEALTH_PATH)
        assert json.loads(connection.getresponse().read())["status"] == "warming"
        notes: list[str] = []
        service_token(cfg, create=True)
        assert ask_service(cfg.model_copy(update={"answer_service_port": service.port}), QUESTION, notes.append) \
            is None and "still loading" in notes[-1]  # answered in-process instead of queueing behind the warm-up
        release.set()


# --- the client -------------------------------------------------------------------------------------------------


def test_the_client_gets_the_answer_and_the_log_failure(served) -> None:
    cfg, _ = served
    reply = ask_service(cfg, QUESTION)
    assert reply.data["answered_by"] == "service" and reply.log_exit is None


def test_no_service_means_in_process(cfg: Settings) -> None:
    assert ask_service(cfg, QUESTION) is None  # no token: `serve` never ran here
    service_token(cfg, create=True)
    from hybridops.infra.services import free_port

    notes = []
    assert ask_service(cfg.model_copy(update={"answer_service_port": free_port()}), QUESTION, notes.append) is None
    assert notes == []  # not running is the normal case: nothing to say


def test_a_service_with_other_settings_or_another_token_is_not_used(served) -> None:
    cfg, _ = served
    notes = []
    assert ask_service(cfg.model_copy(update={"search_k": cfg.search_k + 1}), QUESTION, notes.append) is None
    assert "other settings" in notes[-1]
    assert ask_service(cfg.model_copy(update={"answer_service_token": SecretStr("x" * 20)}), QUESTION,
                       notes.append) is None
    assert "HTTP 401" in notes[-1]


def test_an_answer_path_error_is_raised_as_its_kind(cfg: Settings) -> None:
    def failing(question: str) -> Answer:
        raise ServiceUnavailableError("Weaviate: connection refused")

    token = service_token(cfg, create=True)
    with AnswerService(cfg, token, answer=failing, warm=lambda: None).start(port=0) as service:
        with pytest.raises(ServiceUnavailableError, match="Weaviate"):
            ask_service(cfg.model_copy(update={"answer_service_port": service.port}), QUESTION)


def test_a_slow_service_is_given_up_on_without_answering_the_question_twice(cfg: Settings) -> None:
    """Once the question reached the service it may still answer and log it: no second, in-process answer."""
    token = service_token(cfg, create=True)
    slow = AnswerService(cfg, token, answer=lambda q: time.sleep(1) or stub_answer(q), warm=lambda: None)
    with slow.start(port=0) as service:
        fast = cfg.model_copy(update={"answer_service_port": service.port, "answer_service_timeout_s": 0.3})
        with pytest.raises(ServiceUnavailableError, match="not answered again"):
            ask_service(fast, QUESTION)
        time.sleep(1.5)
        assert service.answered == 1


def test_cli_ask_uses_the_service_without_loading_a_model(served, monkeypatch) -> None:
    from hybridops.flows.cli import app
    from hybridops.tasks.behaviour import answer as answer_module

    cfg, _ = served
    for key, value in cfg.as_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(answer_module, "load_answering_model", lambda settings: pytest.fail("loaded a model"))
    result = CliRunner().invoke(app, ["ask", QUESTION, "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["answered_by"] == "service" and set(printed) == set(Answer.model_fields)
    human = CliRunner().invoke(app, ["ask", QUESTION])
    assert human.exit_code == 0 and "| service" in human.stderr


def test_the_fingerprint_covers_what_an_answer_depends_on(cfg: Settings) -> None:
    assert answer_fingerprint(cfg) == answer_fingerprint(cfg.model_copy(update={"train_steps": 3}))
    for change in ({"namespace": "other"}, {"max_new_tokens": 7}, {"llm_model": "x"}, {"search_mode": "bm25"}):
        assert answer_fingerprint(cfg) != answer_fingerprint(cfg.model_copy(update=change))
    assert answer_client.PROBE_TIMEOUT_S <= 1.0
