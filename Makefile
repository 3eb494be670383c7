# The README names these targets. `make demo` and `make test` are the two commands.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo run test test-fast lint bench venv setup image clean

venv:
	@scripts/setup-test-env.sh --venv-only

setup:
	@scripts/setup-test-env.sh

demo: venv
	$(VENV)/bin/levibot demo

run: venv
	$(VENV)/bin/levibot run

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check levibot sidecars tests bench
	$(VENV)/bin/ruff format --check levibot sidecars tests bench

bench: setup
	$(VENV)/bin/levibot bench

image:  # needs a container engine (none on the development VM)
	docker build -f Containerfile -t levibot:$$($(PY) -c 'import levibot; print(levibot.__version__)') .

clean:
	rm -rf var/test-services bench/results tests/artifacts
