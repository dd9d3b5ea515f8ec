# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,train,tpu,ray,notebook]'
	$(BIN)/python -m pip install --quiet --no-deps google-tunix==0.1.7
	touch $(STAMP)

# The main job on the embedded default: 10,000 rows of the synthetic source, Gemma 2 tokenizer.
demo: $(STAMP)
	$(BIN)/tzc-data build --source synthetic --range 0:10000 --out runs/demo --overwrite

# One test renders the HTML report in Debian's headless Chromium; install it when missing (root).
# Two workers (pytest-xdist), a module to a worker: tests/conftest.py's ModuleScheduling.
test: $(STAMP) chromium
	$(BIN)/python -m pytest -q -n 2

.PHONY: chromium
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Benchmarks against the tokenizer's limit and the usual tools; writes docs/benchmarks.md (~10 min).
bench:
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet --upgrade pip
	.venv-bench/bin/python -m pip install --quiet -e '.[dev,bench]'
	.venv-bench/bin/python tools/bench.py

clean:
	rm -rf $(VENV) .venv-bench runs .pytest_cache .hypothesis
