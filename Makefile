# porthole: `make demo` to see it work, `make test` to prove it.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(HOME)/.cargo/bin:/usr/local/go/bin:$(PATH)

# Cargo's output stays in the work tree: sharing one target directory between
# checkouts lets cargo take one tree's build for the other's.
CARGO_TARGET_DIR ?= $(CURDIR)/target
MUSL := x86_64-unknown-linux-musl
# ring compiles C for the static images with musl-tools' compiler.
export CC_x86_64_unknown_linux_musl := musl-gcc
PODMAN := podman --runtime runc --cgroup-manager=cgroupfs
STATE := $(CURDIR)/.e2e
KUBECONFIG := $(STATE)/kubeconfig
KUBECTL = $(shell . e2e/scripts/lib.sh && echo $$K8S_BIN/kubectl)
HELM = $(shell . e2e/scripts/lib.sh && echo $$HELM_BIN/helm)
IMAGE_TAG ?= dev

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## Install what the build and tests need (apt, rust target, noVNC from npm); idempotent.
	@e2e/scripts/deps.sh
	@proxy/web/vendor.sh

.PHONY: web
web: ## Vendor noVNC from the npm registry for the proxy's console page.
	@proxy/web/vendor.sh

.PHONY: build
build: web ## Build every crate (debug).
	cargo build --workspace --all-targets

.PHONY: crds
crds: web ## Regenerate the CRD YAML from the Rust types.
	cargo run -q -p porthole-api --bin crdgen consolesession > crds/consolesession.yaml
	cargo run -q -p porthole-api --bin crdgen hypervisor > crds/hypervisor.yaml
	cp crds/consolesession.yaml crds/hypervisor.yaml charts/porthole/crds/

.PHONY: check-crds
check-crds: web ## Fail when the committed CRD YAML is stale.
	@for crd in consolesession hypervisor; do \
	  cargo run -q -p porthole-api --bin crdgen $$crd | diff -u crds/$$crd.yaml - >/dev/null && \
	  diff -u crds/$$crd.yaml charts/porthole/crds/$$crd.yaml >/dev/null || \
	  { echo "crds/$$crd.yaml is stale: run 'make crds' and commit"; exit 1; }; done
	@echo "CRDs are up to date"

.PHONY: lint
lint: web ## rustfmt and clippy with warnings as errors.
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: chart-lint
chart-lint: ## helm lint of the chart, and its values schema rejecting bad values.
	e2e/scripts/build-controlplane.sh helm
	$(HELM) lint --strict charts/porthole
	@! $(HELM) template t charts/porthole --set logFormat=xml >/dev/null 2>&1 || \
	  { echo "values.schema.json accepted logFormat=xml"; exit 1; }

.PHONY: unit
unit: web ## Unit and integration tests of the crates (no cluster).
	cargo test --no-fail-fast --workspace --exclude porthole-e2e

.PHONY: bench
bench: web ## Benchmarks: data plane, then control plane on the test bed (BENCH_QUICK=1: smoke run; BENCH_ONLY=dataplane|controlplane): bench/results.json, docs/benchmarks.md.
	bench/bench.sh

.PHONY: images
images: web ## Build the porthole/operator and porthole/proxy OCI images (FROM scratch, static).
	cargo build --release --target $(MUSL) -p porthole-operator -p porthole-proxy
	@for c in operator proxy; do \
	  ctx=$$(mktemp -d) && cp $(CARGO_TARGET_DIR)/$(MUSL)/release/porthole-$$c $$c/Containerfile $$ctx/ && \
	  $(PODMAN) build -q -t localhost/porthole/$$c:$(IMAGE_TAG) -f $$ctx/Containerfile $$ctx >/dev/null && rm -rf $$ctx && \
	  echo "porthole/$$c:$(IMAGE_TAG) $$($(PODMAN) image inspect localhost/porthole/$$c:$(IMAGE_TAG) --format '{{.Size}}' | numfmt --to=iec)"; \
	done

.PHONY: cluster-up
cluster-up: web ## Start the local test cluster (kubeconfig: .e2e/kubeconfig).
	cargo build -q -p porthole-node-agent
	e2e/scripts/cluster-up.sh

.PHONY: cluster-down
cluster-down: ## Stop the local test cluster (logs stay in .e2e/logs).
	e2e/scripts/cluster-down.sh

.PHONY: install
install: ## Install porthole into the test cluster with Helm.
	e2e/scripts/build-controlplane.sh helm
	$(HELM) --kubeconfig $(KUBECONFIG) upgrade --install porthole charts/porthole \
	  --namespace porthole-system --create-namespace --wait --timeout 2m \
	  -f e2e/testbed-values.yaml --set image.tag=$(IMAGE_TAG) --set proxyImage.tag=$(IMAGE_TAG)

.PHONY: e2e
e2e: images ## End-to-end tests on a fresh local test cluster.
	e2e/scripts/cluster-down.sh
	$(MAKE) cluster-up install
	cargo build -p kubectl-console -p porthole-e2e --bins
	e2e/scripts/e2e.sh

.PHONY: demo-check
demo-check: ## Run `make demo` on a fresh cluster, open its URL in Chromium, check the VM's screen, Ctrl-C it.
	e2e/scripts/cluster-down.sh
	cargo build -q -p porthole-e2e --bin demo-check
	$(CARGO_TARGET_DIR)/debug/demo-check

.PHONY: fuzz
fuzz: ## Every cargo-fuzz target for FUZZ_SECONDS (default 20) each; a crash fails.
	fuzz/run.sh

.PHONY: reliability
reliability: ## Write docs/reliability.md from the last fuzz and e2e run's figures.
	e2e/scripts/reliability-report.py

.PHONY: test
test: deps lint check-crds chart-lint unit fuzz e2e demo-check reliability ## Everything CI runs.

.PHONY: demo
demo: deps images cluster-up install ## Start the local stack and print a console URL.
	e2e/scripts/demo.sh
