# Two commands on a fresh machine (each creates .venv when it is missing):
#   make demo   the main job on built-in phantom data
#   make test   the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medvol-installed

.PHONY: demo test env bench clean-env

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch and MONAI in one call with the constraints file (a bare `monai` pulls a multi-GB CUDA torch)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/medvol demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/medvol bench

clean-env:
	rm -rf $(VENV)
