"""AT2 for LlamaIndex: keep the retrieved nodes (or the sentences inside them) an answer relies on, and cite
them sentence by sentence, as metadata and as standard ``CitationBlock``s."""

from importlib.metadata import PackageNotFoundError, version

from llama_index.postprocessor.at2.base import AT2Postprocessor
from llama_index.postprocessor.at2.citations import (
    AT2CitationEventHandler,
    AT2CitationQueryEngine,
    citation_blocks,
    cite_message,
    cite_response,
)
from llama_index.postprocessor.at2.llm import AT2LocalLLM

__all__ = ["AT2CitationEventHandler", "AT2CitationQueryEngine", "AT2LocalLLM", "AT2Postprocessor", "citation_blocks",
           "cite_message", "cite_response"]
try:
    __version__ = version("llama-index-postprocessor-at2")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0.0.0"
