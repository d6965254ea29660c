# Setu: two commands for users.
#   make run    start Setu on embedded defaults (no Redis server or other service needed)
#   make test   install what the tests need (Python packages, redis-server, chromium) and run them all

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := redis-server chromium

.PHONY: run test install install-test system-deps lint typecheck unit bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# One worker per core (--workers auto) unless SETU_WORKERS or ARGS="--workers N" says otherwise.
run: install
	SETU_WORKERS="$${SETU_WORKERS:-auto}" $(PY) server.py $(ARGS)

# Debian packages the tests use, installed only when missing.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	PATH="$$PATH:/usr/sbin:/sbin" command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	PATH="$$PATH:/usr/sbin:/sbin" command -v sysctl >/dev/null 2>&1 || missing="$$missing procps"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lint: install-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: install-test
	$(PY) -m mypy

unit: install-test system-deps
	$(PY) -m pytest

test: system-deps install-test lint typecheck unit

bench: install-test
	$(PY) -m bench.relay --consults 4 --seconds 20 --json bench-results/relay.json
	$(PY) -m bench.join --rounds 20 --json bench-results/join.json
	$(PY) -m bench.recording --consults 4 --seconds 20 --json bench-results/recording.json
	$(PY) -m bench.weaklink --scenario all --json bench-results/weaklink.json
	$(PY) -m bench.scale --consults 4 --seconds 20 --json bench-results/scale.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
