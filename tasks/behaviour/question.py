"""What a question must be before anything answers it: one rule for `ask`, the CLI and the answering service.

Its own module (importing nothing heavy), so the CLI and the service check a question without loading the
answer path.
"""

from __future__ import annotations

from hybridops.tasks.core.errors import BadInputError

MAX_QUESTION_CHARS = 4000  # the interaction contract's limit, checked before any generation


def checked_question(question: str) -> str:
    """The question without surrounding whitespace; BadInputError when it is empty or too long."""
    question = question.strip() if isinstance(question, str) else ""
    if not question:
        raise BadInputError("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise BadInputError(f"the question has {len(question)} characters; at most {MAX_QUESTION_CHARS} are accepted")
    return question
