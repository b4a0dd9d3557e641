# Set-up in two commands on a fresh machine:
#   make train   installs the project into .venv the first time, then trains on the built-in synthetic set
#   make test    the same install, then the test suite (what .ci/run runs)
# ARGS passes options through: make train ARGS="--time-budget 5m", make test ARGS="-k predict".
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= dev,demo
BIN := $(VENV)/bin
STAMP := $(VENV)/.camoxpert-installed

.PHONY: install train test

install: $(STAMP)

# Installed again only when the dependencies change (setup.cfg, pyproject.toml).
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/python train_ultimate.py train $(ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(ARGS)
