"""AT2 for LangChain: prune retrieved documents by attribution and cite them in answers."""

from langchain_at2.callbacks import AT2CitationCallbackHandler
from langchain_at2.citations import AT2CitationRunnable
from langchain_at2.compressors import AT2DocumentCompressor
from langchain_at2.llms import AT2LocalLLM

__all__ = ["AT2CitationCallbackHandler", "AT2CitationRunnable", "AT2DocumentCompressor", "AT2LocalLLM"]
