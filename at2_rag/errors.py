"""Exception types raised by at2-rag; every bad input maps to one of these."""


class AT2Error(Exception):
    """Base class of every error raised by at2-rag."""


class InvalidInputError(AT2Error, ValueError, TypeError):
    """An argument has the wrong type or value (a str where a list of passages is expected, top_k=2.5, ...).

    Raised before any model work; it is both a ``ValueError`` and a ``TypeError`` so either ``except`` works.
    """


class EmptyInputError(InvalidInputError):
    """The query, the source list, a source's text or the response is empty."""


class ContextTooLongError(AT2Error, ValueError):
    """The prompt plus response does not fit in the model's context window."""

    def __init__(self, n_tokens: int, limit: int, detail: str = ""):
        self.n_tokens = n_tokens
        self.limit = limit
        super().__init__(
            f"prompt and response take {n_tokens} tokens but the model's window is {limit}; "
            + (detail or "pass fewer or shorter passages, or truncate=True to cut the longest passages to fit")
        )


class ModelLoadError(AT2Error, OSError):
    """The model could not be found or loaded (unknown hub id, missing path, missing package, bad device/dtype)."""


class CoefficientMismatchError(AT2Error, ValueError):
    """A coefficient file does not fit the loaded model (shape, architecture, model id, feature family) or is
    not a valid coefficient file (bad metadata, non-finite values)."""


class UnsupportedModelError(AT2Error, ValueError):
    """The model's attention cannot be captured (it does not route through transformers' attention interface)."""


class ConfigurationError(InvalidInputError):
    """A setting that can never work (e.g. no LLM to draft with): raised, never failed open."""
