# Entry points of the suite. `make run` starts it, `make test` proves it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO  ?= cargo
VENV   ?= .venv
PY_REQ := scripts/requirements-test.txt
STAMP  := $(VENV)/.installed-$(shell sha1sum $(PY_REQ) 2>/dev/null | cut -c1-12)

.PHONY: help build dist build-debug run run-direct test chaos bench observe unit lint fmt tools system-deps validate-manifests nextest clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

build: ## release binaries of every service (target/release): the bench's request path fully optimised, the rest lower, built in parallel
	$(CARGO) build --release --workspace --bins

dist: ## fully optimised binaries (target/dist: whole-program LTO), as in the images; for make bench
	$(CARGO) build --profile dist --workspace --bins

build-debug:
	$(CARGO) build --workspace --bins

run: build ## the suite behind localmesh: TLS gateway on 127.0.0.1:8443, admin on :15000
	target/release/localmesh up

run-direct: build ## the services without localmesh, on fixed ports (debugging)
	scripts/run-local.sh target/release

test: tools nextest ## the whole test suite (real servers, real clients)
	$(CARGO) nextest run --workspace --no-fail-fast

chaos: nextest ## the fault matrix at full size against a real localmesh up: pods killed and hung, stream floods; prints the audit table
	$(CARGO) build --workspace --bins
	CHAOS=full $(CARGO) nextest run -p localmesh --test chaos --no-capture

bench: dist ## localmesh beside direct calls, nginx and HAProxy under h2load and localmesh load: throughput, latency, CPU, memory, streams (prints figures)
	scripts/install-system-deps.sh bench
	BENCH_BIN=target/dist scripts/bench.sh

observe: ## Prometheus on 127.0.0.1:9090 scraping a running `make run` (localmesh's /sd), with the alert rules
	scripts/observe.sh

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

tools: $(STAMP) ## test clients and servers: Python grpcio, buf, PostgreSQL, Chromium, Prometheus; nginx, HAProxy, h2load (the bench smoke run)
	scripts/install-system-deps.sh bench

$(STAMP): $(PY_REQ)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $(PY_REQ)
	rm -f $(VENV)/.installed-*
	touch $@

system-deps:
	scripts/install-system-deps.sh

validate-manifests: tools ## schema-check manifests/ and gateway/ offline
	scripts/validate-manifests.sh

nextest:
	@$(CARGO) nextest --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-nextest

clean:
	$(CARGO) clean
	rm -rf $(VENV)

# Kind + Istio: cluster-up, istio, addons, images, kind-load, deploy, verify-cluster, ...
include mk/cluster.mk
