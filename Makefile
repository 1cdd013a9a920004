# Two commands on a fresh clone: `make test` and `make demo`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# TORCH_INDEX=https://download.pytorch.org/whl/cpu installs PyTorch's CPU-only build first (about
# 0.7 GB instead of several GB of CUDA wheels) on a machine without a GPU.
TORCH_INDEX ?=

.PHONY: install test test-fast demo bench docs docs-images clean

install: $(STAMP)

# The package and its runtime needs; re-installed when the package metadata changes (`pip install
# -e` keeps sources live). The test extras come with `make test` (and the docs targets).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install -q torch torchvision --index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(TEST_STAMP)

# Three workers, a test file each at a time (a file's tests share their module fixtures; the blocks
# of one docs page run in order): on 2 cores the waits of one (subprocess start-up, loopback
# servers, timeouts) overlap the work of another. `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= 3
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile tests

test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

demo: install
	$(BIN)/maekit demo --output_dir demo_output

bench: install
	$(BIN)/python benchmarks/pretrain_throughput.py

# The site, into site/: the CLI reference and the model table are generated from the code by the
# hook in scripts/docs_reference.py at every build; --strict fails on a broken link or reference.
docs: $(TEST_STAMP)
	$(BIN)/python -m mkdocs build --strict

# The pictures of the docs (docs/images/*.png), made by the code: the demo's reconstructions and
# loss curve, the k-NN monitor plot, and the app in headless Chromium (minutes: run the demo).
docs-images: $(TEST_STAMP)
	$(BIN)/python scripts/docs_images.py

clean:
	rm -rf $(VENV) demo_output site build *.egg-info src/*.egg-info
