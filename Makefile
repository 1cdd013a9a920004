# Two commands on a fresh clone: `make test` and `make demo`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo bench docs docs-images clean

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

# The site, into site/: the CLI reference and the model table are generated from the code by the
# hook in scripts/docs_reference.py at every build; --strict fails on a broken link or reference.
docs: install
	$(BIN)/python -m mkdocs build --strict

# The pictures of the docs (docs/images/*.png), made by the code: the demo's reconstructions and
# loss curve, the k-NN monitor plot, and the app in headless Chromium (minutes: run the demo).
docs-images: install
	$(BIN)/python scripts/docs_images.py

clean:
	rm -rf $(VENV) demo_output site build *.egg-info src/*.egg-info
