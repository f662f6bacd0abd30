# wasmesh — the two commands a new user runs are `make demo` and `make test`.
# Every target is idempotent: it installs what is missing and skips what is done.

SHELL := /bin/bash
PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
BUILD := build
APT_PACKAGES := clang lld wasi-libc libclang-rt-14-dev-wasm32 wabt wrk nginx-light skopeo docker-registry prometheus chromium
STAMP := $(BUILD)/.stamps

.PHONY: all setup system-deps python-deps plugins native test test-fast lint demo bench crds clean

all: test

$(STAMP):
	@mkdir -p $(STAMP)

# System packages: toolchains that build the test plugins, and the real peers the tests compare against.
system-deps: | $(STAMP)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(PY):
	@$(PY_SYS) -m venv $(VENV) 2>/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && $(PY_SYS) -m venv $(VENV); }
	@$(PIP) install -q --upgrade pip

$(STAMP)/python-deps: pyproject.toml | $(PY) $(STAMP)
	$(PIP) install -q -e '.[dev]'
	@# xds-protos overwrites files of opentelemetry-proto (same package path); put them back
	$(PIP) install -q --no-deps --force-reinstall opentelemetry-proto==1.45.2
	@touch $@

python-deps: $(STAMP)/python-deps

setup: system-deps python-deps

# Test and sample plugins, built from source by real toolchains (clang wasm32-wasi, AssemblyScript, WAT).
plugins: setup
	$(PY) -m sdk.toolchains build-tree --out $(BUILD)/plugins
	$(PY) -m sdk.scaffold build-plugins --out $(BUILD)/plugins

# The request-path modules compiled by Cython (wasmhost/_compiled/); a copy whose source has
# changed since is never used, so this only speeds things up. Rebuilds what changed. Without a
# C compiler the sidecar still runs, as plain Python (under CI=true the suite then fails).
native: python-deps
	@$(PY) -m wasmhost._native_build || echo "the compiled copies were not built: the sidecar runs as plain Python"

test: setup plugins native
	$(PY) -m ruff check .
	$(PY) -m mypy wasmhost sdk registry controlplane
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -m "not slow" -q

test-fast: python-deps
	$(PY) -m pytest -m "not slow and not e2e" -q -x

lint: python-deps
	$(PY) -m ruff check .
	$(PY) -m mypy wasmhost sdk registry controlplane
	$(VENV)/bin/lint-imports

# The whole mesh on 127.0.0.1: control plane, registry, bookinfo with a wasmesh sidecar per
# workload; routing, a signed plugin applied and hot-reloaded under load, refusals. ~30 s.
demo: setup plugins native
	$(VENV)/bin/wasmesh demo

bench: setup plugins native
	$(PY) benchmarks/hostcall_filter.py
	$(PY) benchmarks/registry_push_pull.py
	$(PY) benchmarks/mtls_handshake.py
	$(PY) benchmarks/controlplane_scale.py --proxies 1000
	$(PY) benchmarks/sidecar_wrk.py --duration 10

# Regenerate crds/*.yaml from controlplane/_schemas.py (the files are DO NOT EDIT).
crds: python-deps
	$(PY) -m controlplane._crdgen

clean:
	rm -rf $(BUILD) wasmhost/_compiled
