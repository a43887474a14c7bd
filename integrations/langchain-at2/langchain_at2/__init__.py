"""AT2 for LangChain: keep the retrieved documents (or the sentences inside them) an answer relies on, and cite
them sentence by sentence with langchain-core's standard Citation blocks: ``AT2Middleware`` for
``create_agent`` agents (the ``agents`` extra), ``AT2ContextRunnable`` and ``AT2CitationRunnable`` for LCEL,
``AT2DocumentCompressor`` for langchain-classic's ``ContextualCompressionRetriever`` (legacy)."""

from importlib.metadata import PackageNotFoundError, version

from langchain_at2._convert import citation_blocks, format_documents, with_citations
from langchain_at2.callbacks import AT2CitationCallbackHandler
from langchain_at2.citations import AT2CitationRunnable
from langchain_at2.compressors import AT2ContextRunnable, AT2DocumentCompressor
from langchain_at2.llms import AT2LocalLLM

__all__ = ["AT2CitationCallbackHandler", "AT2CitationRunnable", "AT2ContextRunnable", "AT2DocumentCompressor",
           "AT2LocalLLM", "AT2Middleware", "citation_blocks", "format_documents", "with_citations"]


def __getattr__(name: str):
    """``AT2Middleware`` needs langchain (the ``agents`` extra); importing it is deferred until asked for."""
    if name == "AT2Middleware":
        try:
            from langchain_at2.agents import AT2Middleware
        except ImportError as exc:
            raise ImportError('AT2Middleware needs langchain>=1.0: pip install "langchain-at2[agents]"') from exc
        return AT2Middleware
    raise AttributeError(f"module 'langchain_at2' has no attribute {name!r}")


try:
    __version__ = version("langchain-at2")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0.0.0"
