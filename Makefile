# k8s-calico. `make demo` and `make test` are all a fresh machine needs (Rust, Go, Python 3, apt).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

CARGO   ?= cargo
PYTHON  ?= python3
VENV    := .venv
LIBRARY := ansible/roles/k8s_calico/library
MODULES := calico_matrix calico_upgrade calico_nettest
MUSL    := x86_64-unknown-linux-musl
ANSIBLE_PLAYBOOK := $(VENV)/bin/ansible-playbook
# Installs Debian packages, as root or through sudo, refreshing the package lists if needed.
APT_INSTALL = SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$SUDO apt-get install -y -q $(1) || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q $(1); }

# The real control plane (tests/realplane): binaries built from Go modules into a cache
# outside the checkout, keyed by their inputs; `make cluster-up` state in .cluster/.
CONTROLPLANE_BUILD := tests/realplane/binaries/build.sh
CONTROLPLANE_BIN = $(shell bash $(CONTROLPLANE_BUILD) --print-dir)
CLUSTER_DIR   := $(CURDIR)/.cluster
CLUSTER_NODES ?= 5
REALPLANE     := target/debug/realplane

.PHONY: build venv test-tools hostroot test lint demo dist bench clean help controlplane cluster-up cluster-down

help:
	@echo "make          build the modules (release) into $(LIBRARY)"
	@echo "make demo     a simulated cluster, the playbook end to end (plan, backup, upgrade, network test)"
	@echo "make test     every test: fmt, clippy, cargo tests, Ansible runs"
	@echo "make dist     static musl build of the modules into dist/"
	@echo "make bench    benchmarks, rewriting docs/benchmarks.md"
	@echo "make cluster-up    a real control plane (etcd, kube-apiserver, controller-manager,"
	@echo "                   scheduler, CLUSTER_NODES kwok nodes); writes .cluster/kubeconfig"
	@echo "make cluster-down  stop it"
	@echo "make controlplane  build (once, cached) the control plane's binaries from Go modules"

## Release binaries beside their sidecar documentation, where the role finds them.
build:
	$(CARGO) build --release --locked -p k8s-calico --bins
	@for m in $(MODULES); do install -m 0755 target/release/$$m $(LIBRARY)/$$m; done
	@echo "modules installed in $(LIBRARY): $(MODULES)"

## ansible-core in a private virtualenv (nothing is installed system-wide).
venv: $(VENV)/.installed
$(VENV)/.installed: tests/ansible/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r tests/ansible/requirements.txt
	@touch $@

## The tools the probe script uses in the agnhost image, for its loopback test, and those the
## package tests build their repository and Debian root with (dpkg-deb, apt-ftparchive, gpg,
## debootstrap).
TEST_PACKAGES := curl netcat-openbsd bind9-dnsutils apt-utils gpg debootstrap
test-tools:
	@if ! command -v curl >/dev/null || ! command -v nc >/dev/null || ! command -v nslookup >/dev/null \
		|| ! command -v apt-ftparchive >/dev/null || ! command -v gpg >/dev/null || ! command -v debootstrap >/dev/null; then \
		$(call APT_INSTALL,$(TEST_PACKAGES)); \
	fi

## The Debian root the package tests treat as a host (tests/hostroot/build.sh: debootstrap, about
## 3 minutes once), cached outside the checkout under the hash of the script that builds it.
HOSTROOT_CACHE ?= $(HOME)/.cache/k8s-calico
HOSTROOT := $(HOSTROOT_CACHE)/hostroot-$(shell sha256sum tests/hostroot/build.sh | cut -c1-12).tar
hostroot: $(HOSTROOT)
$(HOSTROOT): | test-tools
	tests/hostroot/build.sh $@

lint: venv
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/ansible-lint --offline --format=pep8 ansible/roles playbooks

## Everything CI checks. The Ansible end-to-end tests are Rust tests that drive the real
## ansible-playbook from the virtualenv; the end-to-end tests run on the real control plane
## (built first, cached). K8S_CALICO_NO_SKIP makes every test whose tools are missing fail
## instead of skip.
test: venv test-tools hostroot lint controlplane
	K8S_CALICO_VENV=$(CURDIR)/$(VENV) K8S_CALICO_NO_SKIP=1 K8S_CALICO_HOSTROOT=$(HOSTROOT) \
		K8S_CALICO_CONTROLPLANE_BIN=$(CONTROLPLANE_BIN) \
		$(CARGO) test --locked --workspace

## The control plane's binaries: kube-apiserver, kube-controller-manager, kube-scheduler and
## kubectl (k8s.io/kubernetes), etcd and kwok, from the Go module proxy. About ten minutes of
## two cores the first time; afterwards a hash check (nothing is rebuilt for Rust changes).
controlplane:
	@command -v go >/dev/null || { echo "make: Go 1.26 or newer is needed to build the control plane (https://go.dev/dl/)" >&2; exit 1; }
	@nice -n 10 bash $(CONTROLPLANE_BUILD) >/dev/null

## A real control plane like a user's: etcd, kube-apiserver (TLS, certificates and tokens, RBAC,
## 127.0.0.1 only), controller-manager, scheduler and kwok with CLUSTER_NODES nodes (one
## control-plane node). Returns once every node is Ready.
cluster-up: controlplane
	$(CARGO) build --locked -p realplane --bin realplane
	@K8S_CALICO_CONTROLPLANE_BIN=$(CONTROLPLANE_BIN) $(REALPLANE) up --dir $(CLUSTER_DIR) --nodes $(CLUSTER_NODES) >/dev/null
	@ln -sfn $(CONTROLPLANE_BIN) $(CLUSTER_DIR)/bin
	@echo "$(CLUSTER_DIR)/kubeconfig"
	@echo "  export KUBECONFIG=$(CLUSTER_DIR)/kubeconfig PATH=$(CLUSTER_DIR)/bin:\$$PATH   # its kubectl"

cluster-down:
	@[ -x $(REALPLANE) ] || $(CARGO) build --locked -p realplane --bin realplane
	$(REALPLANE) down --dir $(CLUSTER_DIR)

## The demo: kubesim runs a simulated five-node cluster (inventory/demo/cluster.yaml) and the real
## playbook upgrades its Calico end to end. DEMO_KEEP=1 leaves the simulator running.
demo: build venv
	$(CARGO) build --locked -p kubesim --bin kubesim
	inventory/demo/demo.sh target/debug/kubesim $(ANSIBLE_PLAYBOOK) $(DEMO_KEEP)

## Static binaries for running the modules on a remote host whatever its glibc.
## ring's C and assembly need a musl C compiler: musl-tools from the system package manager.
dist:
	rustup target add $(MUSL)
	@command -v musl-gcc >/dev/null || { $(call APT_INSTALL,musl-tools); }
	CC_x86_64_unknown_linux_musl=musl-gcc $(CARGO) build --release --locked -p k8s-calico --bins --target $(MUSL)
	@mkdir -p dist
	@for m in $(MODULES); do install -m 0755 target/$(MUSL)/release/$$m dist/$$m; cp $(LIBRARY)/$$m.yml dist/; done
	@file dist/* | grep -v '\.yml' || true

## Benchmarks against kubesim, rewriting docs/benchmarks.md (not part of `make test`): the
## release modules beside kubernetes.core (its own virtualenv) and kubectl, measured with GNU time.
## BENCH_ARGS=--quick for a smoke run, --full for the 300,000-object backup, --only ROW for one row.
BENCH_VENV := .venv-bench
bench: build $(BENCH_VENV)/.installed
	@[ -x /usr/bin/time ] || { $(call APT_INSTALL,time); }
	$(CARGO) build --release --locked -p k8s-calico-bench --bins
	$(CARGO) run --release --locked -p k8s-calico-bench -- --out docs/benchmarks.md --venv $(BENCH_VENV) $(BENCH_ARGS)
$(BENCH_VENV)/.installed: tests/bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -r tests/bench/requirements.txt
	@touch $@

clean:
	$(CARGO) clean
	rm -rf $(VENV) dist .demo .cluster $(addprefix $(LIBRARY)/,$(MODULES))
