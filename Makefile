# nestor: two commands do all the set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

DURATION ?= 150
ROBOTS ?= 2
QUICK ?= 0
CASES ?=
SEEDS ?=

# DDS stays on this machine, always.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export PYTHONDONTWRITEBYTECODE = 1

PACKAGES := ros2_ws/src/nestor_core ros2_ws/src/nestor_robot ros2_ws/src/nestor_bringup sim cloud_brain demo
SETUP_FILES := requirements.txt $(foreach p,$(PACKAGES),$(wildcard $(p)/setup.py $(p)/setup.cfg $(p)/pyproject.toml))

.PHONY: venv postgres test test-fast demo lint proto certs bench bench-learning bench-load clean

venv: $(STAMP)

$(STAMP): $(SETUP_FILES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip==25.3" "setuptools==80.9.0" "wheel==0.45.1"
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-build-isolation --no-deps $(foreach p,$(PACKAGES),-e $(p))
	touch $(STAMP)

# The PostgreSQL server binaries (Debian package `postgresql`): the tests start their own
# throw-away server on 127.0.0.1 from them (tests/pg_testlib.py). Installed here when missing and
# we are root (CI); otherwise the PostgreSQL tests skip (and fail under CI=true).
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; \
	else echo "make: PostgreSQL tests need the Debian package postgresql (sudo apt-get install -y postgresql)"; fi

# `make lint` first (ruff check + ruff format --check), then two pytest processes: tests/learning
# imports torch, the rest imports rclpy; never both at once.
test: lint postgres
	$(PY) -m pytest -q tests --ignore=tests/learning
	$(PY) -m pytest -q tests/learning

test-fast: venv postgres
	$(PY) -m pytest -q -m "not slow" tests --ignore=tests/learning
	$(PY) -m pytest -q -m "not slow" tests/learning

demo: venv
	$(VENV)/bin/nestor demo --duration $(DURATION) --robots $(ROBOTS)

# ruff is pinned (requirements.txt); its configuration is pyproject.toml's.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

proto: venv
	$(PY) proto/generate.py

clean:
	rm -rf $(VENV) runs

certs: venv
	$(VENV)/bin/nestor-cloud certs --out certs --robots $(ROBOTS)

bench: venv
	$(PY) -m bench.run $(if $(filter 1,$(QUICK)),--quick,)

bench-learning: venv
	$(PY) -m bench_learning.run $(if $(filter 1,$(QUICK)),--quick,) $(if $(CASES),--cases $(CASES),) $(if $(SEEDS),--seeds $(SEEDS),)

bench-load: venv
	$(PY) -m bench_load.run $(if $(filter 1,$(QUICK)),--quick,)
	$(PY) -m bench_load.replicas $(if $(filter 1,$(QUICK)),--quick,)
