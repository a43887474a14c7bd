"""Which failures during a query can never succeed (configuration errors: raise) and which may pass (fail open).

Integrations fail open on faults of one query (a context over the window, a rate limit, a timeout) so the
user's context is never lost; but a missing package, a rejected API key or an unknown model would fail on
every query, and failing open there would hide a pipeline that never prunes or cites.
"""

from __future__ import annotations

from .errors import CoefficientMismatchError, ConfigurationError, ModelLoadError, UnsupportedModelError

_CONFIG_NAMES = ("AuthenticationError", "PermissionDeniedError", "PermissionError", "UnauthorizedError",
                 "NotFoundError", "ModelNotFoundError", "InvalidApiKey")
_TRANSIENT_NAMES = ("RateLimitError", "Timeout", "TimeoutError", "APITimeoutError", "APIConnectionError",
                    "ConnectionError", "ServiceUnavailableError", "InternalServerError", "OverloadedError")
_KEY_PHRASES = ("api key", "api_key", "apikey", "no such model", "model not found", "unknown model",
                "does not exist", "package not found", "pip install")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_configuration_error(exc: BaseException) -> bool:
    """True for errors that will recur on every query: a missing package, authentication, an unknown model,
    or the attributor's own configuration errors. Rate limits, timeouts and connection errors are transient."""
    for err in _chain(exc):
        names = {cls.__name__ for cls in type(err).__mro__}
        if names & set(_TRANSIENT_NAMES) or getattr(err, "status_code", None) in (408, 429, 500, 502, 503, 504):
            return False
        if isinstance(err, (ImportError, ConfigurationError, ModelLoadError, CoefficientMismatchError, UnsupportedModelError)):
            return True
        if names & set(_CONFIG_NAMES) or getattr(err, "status_code", None) in (401, 403, 404):
            return True
        if isinstance(err, ValueError) and any(p in str(err).lower() for p in _KEY_PHRASES):
            return True
    return False


def skip_reason(exc: BaseException) -> str:
    """One line for ``metadata["at2_skipped"]``: what failed, so callers see it without reading logs."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
