"""AT2 for LlamaIndex: prune retrieved nodes by attribution and cite them in answers."""

from llama_index.postprocessor.at2.base import AT2Postprocessor
from llama_index.postprocessor.at2.citations import AT2CitationEventHandler, AT2CitationQueryEngine, cite_response
from llama_index.postprocessor.at2.llm import AT2LocalLLM

__all__ = ["AT2CitationEventHandler", "AT2CitationQueryEngine", "AT2LocalLLM", "AT2Postprocessor", "cite_response"]
