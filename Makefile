# The README names these targets. `make demo` and `make test` are the two commands.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo run test test-fast lint bench venv setup image image-gpu clean

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

# podman or docker, whichever is present; with podman, our containers.conf (runc, no default
# ulimits: crun fails on these machines). Without a registry the base is made from Debian's
# packages (scripts/make-base-image.sh). Tags levibot:<version> and levibot:src-<hash>.
export CONTAINERS_CONF ?= $(CURDIR)/containers/containers.conf

image:
	scripts/build-image.sh

image-gpu:
	scripts/build-image.sh --gpu

clean:
	rm -rf var/test-services bench/results tests/artifacts
