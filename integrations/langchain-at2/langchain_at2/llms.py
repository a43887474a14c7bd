"""The attributor's local model as a LangChain LLM (for offline pipelines and examples)."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.llms import LLM

from at2_rag import load_model


class AT2LocalLLM(LLM):
    """Greedy chat completions from a local causal LM loaded by at2-rag (default: SmolLM2-135M-Instruct)."""

    model: str | None = None
    max_new_tokens: int = 64

    @property
    def _llm_type(self) -> str:
        return "at2-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model or "default", "max_new_tokens": self.max_new_tokens}

    def _call(self, prompt: str, stop: list[str] | None = None,
              run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> str:
        text = load_model(self.model).chat(prompt, self.max_new_tokens)
        for s in stop or []:
            text = text.split(s)[0]
        return text
