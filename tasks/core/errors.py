"""One root for every error hybridops raises on purpose, and a few kinds that say what to do about it.

The CLI maps a kind to a message and exit code in one place (flows/cli/common.py); flows retry only what
`is_transient` says a retry can fix. Library errors (Weaviate, botocore, OS) that mean "a service is not
there" are classified here too, so no caller keeps its own catch-list.
"""

from __future__ import annotations


class HybridopsError(Exception):
    """Root: an expected failure with a message meant for the operator."""

    exit_code = 1
    transient = False  # worth a retry by a flow?


class BadInputError(HybridopsError, ValueError):
    """What the user gave (a document, a suite, a setting, an argument) is wrong; retrying will not help."""

    exit_code = 2


class DocumentError(BadInputError):
    """A landed object refused as a document, by the store (a FIFO, a link out of the root) or by a parser;
    reason_code is stable (e.g. 'symlink_outside_root', 'too_deep') and becomes the quarantine reason."""

    def __init__(self, reason_code: str, message: str):
        super().__init__(f"{reason_code}: {message}")
        self.reason_code = reason_code
        self.message = message

    def __reduce__(self):  # picklable for Prefect results and process pools
        return (DocumentError, (self.reason_code, self.message))


class ServiceUnavailableError(HybridopsError):
    """Weaviate, the object store, the Prefect server or a model file could not be reached; a retry may help."""

    exit_code = 3
    transient = True


class IntegrityError(HybridopsError):
    """Stored state does not verify (tampered adapter, corrupt record); nothing was changed because of it."""

    exit_code = 4


class ConflictError(HybridopsError):
    """Another run holds the namespace lock, or the state moved under us (compare-and-swap lost)."""

    exit_code = 5


def is_transient(exc: BaseException) -> bool:
    """Worth a retry: a service was unreachable or timed out (also when that is the cause of `exc`)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, HybridopsError):
            if exc.transient:
                return True
        elif isinstance(exc, (ConnectionError, TimeoutError)) or _library_transient(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _library_transient(exc: BaseException) -> bool:
    from weaviate.exceptions import (
        WeaviateConnectionError,
        WeaviateGRPCUnavailableError,
        WeaviateStartUpError,
        WeaviateTimeoutError,
    )

    return isinstance(exc, (WeaviateConnectionError, WeaviateGRPCUnavailableError, WeaviateStartUpError,
                            WeaviateTimeoutError))


def describe(exc: BaseException) -> str:
    """One operator-readable line for any failure (first line of a library's message, prefixed by its service)."""
    from weaviate.exceptions import WeaviateBaseError

    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, WeaviateBaseError):
        return f"Weaviate: {first}"
    if isinstance(exc, HybridopsError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {first}"


def exit_code(exc: BaseException) -> int:
    """The CLI's exit code for a failure: the kind's code, 3 for a library's unreachable service, else 1."""
    if isinstance(exc, HybridopsError):
        return exc.exit_code
    return ServiceUnavailableError.exit_code if is_transient(exc) else 1


def error_of_kind(code: int, message: str) -> HybridopsError:
    """The error of the kind whose exit code is `code` (HybridopsError for any other): a failure reported by
    another process (the answering service) raised here as if it happened here."""
    for kind in (BadInputError, ServiceUnavailableError, IntegrityError, ConflictError):
        if kind.exit_code == code:
            return kind(message)
    return HybridopsError(message)
