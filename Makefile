# ebmssl developer commands. `make test` and `make train` work on a fresh machine: they create the
# virtual environment, install the pinned versions, and run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install data test test-fast train components benchmark gpu-check clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST without internet: Debian's dataset-fashion-mnist package (needs root); otherwise
# torchvision downloads it into data/ on first use.
data:
	@test -d /usr/share/datasets/fashion-mnist || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1; } || \
	  echo "note: Debian's dataset-fashion-mnist is not installed; torchvision will download Fashion-MNIST into data/"

test: install data
	$(BIN)/python -m pytest -n 2 --dist loadscope --no-loadscope-reorder -q --durations=25 $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -n 2 --dist loadscope --no-loadscope-reorder -q -m "not slow" $(PYTEST_ARGS)

train: install data
	$(BIN)/python tools/train.py $(ARGS)

components: install
	$(BIN)/python tools/components.py

benchmark: install
	$(BIN)/python tools/benchmark.py $(ARGS)

gpu-check: install
	$(BIN)/python tools/gpu_check.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
