# Two commands for a fresh clone:
#   make demo   - the end-to-end LoRA demo on CPU (see README)
#   make test   - install everything into .venv (torch CPU build) and run lint + tests
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test lint demo clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/pytest -q -n auto --dist loadfile  # one worker per core, each test file on one worker

demo: $(STAMP)
	$(PY) -m scripts.demo

clean:
	rm -rf $(VENV) outputs
