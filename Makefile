# Two entry points for a fresh machine: `make study` and `make test` (see README).
# Both create .venv and install the project into it first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch + torchvision: the pair that installs from this machine's disk and that lmms-eval accepts.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup study quick test clean-venv

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(BIN)/.installed

study: setup
	$(BIN)/python pipeline/study.py

quick: setup  # the main table on the small quick profile, in build/quick/ (a few minutes)
	$(BIN)/python pipeline/study.py --quick

test: setup
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
