# Two commands on a fresh clone: `make test` and `make demo`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo bench clean

install: $(STAMP)

# Re-install when the package metadata changes; `pip install -e` keeps sources live.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

demo: install
	$(BIN)/maekit demo --output_dir demo_output

bench: install
	$(BIN)/python benchmarks/pretrain_throughput.py

clean:
	rm -rf $(VENV) demo_output build *.egg-info src/*.egg-info
