"""AT2 for LangChain: keep the retrieved documents an answer relies on, and cite them sentence by sentence."""

from importlib.metadata import PackageNotFoundError, version

from langchain_at2.callbacks import AT2CitationCallbackHandler
from langchain_at2.citations import AT2CitationRunnable
from langchain_at2.compressors import AT2DocumentCompressor
from langchain_at2.llms import AT2LocalLLM

__all__ = ["AT2CitationCallbackHandler", "AT2CitationRunnable", "AT2DocumentCompressor", "AT2LocalLLM"]
try:
    __version__ = version("langchain-at2")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0.0.0"
