# The two commands a new machine needs:  make demo  and  make test.
# Both install what they need first (system packages as root, then the venv).

# The venv is built on the system Python so that the local cluster's unprivileged
# login user can run it (a pyenv Python under /root is not readable by others).
# (Recursive '=': evaluated after system-deps has run.)
PYTHON = $(shell test -x /usr/bin/python3.11 && echo /usr/bin/python3.11 || command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup system-deps test lint unit demo bench clean

setup: system-deps $(VENV)/.installed

system-deps:
	@scripts/install-system-deps.sh

$(VENV)/.installed: pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy gpufleet

test: lint
	$(BIN)/pytest

demo: setup
	$(BIN)/python scripts/demo.py

bench: setup
	$(BIN)/python bench/render.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
