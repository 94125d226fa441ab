# The README's two commands: `make demo` and `make test`. Everything installs from package registries.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# PyTorch first, pinned: a plain `torch` would pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test test-fast test-gpu lint venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/lmsmith demo

# ruff (installed with the test extra): pyflakes, pycodestyle, bugbear and import order; config in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check src tests bench

test: $(STAMP)
	$(BIN)/python -m pytest -q tests --ignore=tests/gpu

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests --ignore=tests/gpu -m "not slow"

# On a CUDA machine (the device tool): uses the machine's python, which already holds torch.
test-gpu:
	PYTHONPATH=src python3 -m pytest -q tests/gpu

clean:
	rm -rf $(VENV) build *.egg-info
