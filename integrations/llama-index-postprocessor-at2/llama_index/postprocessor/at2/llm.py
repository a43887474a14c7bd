"""The attributor's local model as a LlamaIndex LLM (for offline pipelines and examples)."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from at2_rag import LanguageModel, load_model


class AT2LocalLLM(CustomLLM):
    """Greedy chat completions from a local causal LM loaded by at2-rag (default: SmolLM2-135M-Instruct)."""

    model: str | None = Field(default=None, description="hub id, local dir or .gguf; None for the bundled default")
    max_new_tokens: int = Field(default=64)
    _lm: LanguageModel = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lm = load_model(self.model)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self._lm.max_context, num_output=self.max_new_tokens,
                           model_name=self._lm.model_id)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._lm.chat(prompt, self.max_new_tokens))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = self._lm.chat(prompt, self.max_new_tokens)
        yield CompletionResponse(text=text, delta=text)
