# k8s-calico. `make demo` and `make test` are all a fresh machine needs (Rust, Go, Python 3, apt).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

CARGO   ?= cargo
PYTHON  ?= python3
VENV    := .venv
MODULES := calico_matrix calico_upgrade calico_nettest
# The repository's ansible/ is the collection k8s_calico.calico; its modules' builds live in bin/
# as <module>_<architecture>, which the action plugins (ansible/plugins/action) pick per host.
BIN_DIR := ansible/bin
HOST_ARCH := $(shell uname -m | sed 's/^amd64$$/x86_64/; s/^arm64$$/aarch64/')
# ansible.cfg finds the collection in a clone through this link (made by `make build`).
COLLECTION_LINK := .collections/ansible_collections/k8s_calico/calico
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
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

.PHONY: build venv test-tools hostroot test lint demo dist collection bench clean help controlplane cluster-up cluster-down

help:
	@echo "make          build the modules (release, this machine's architecture) into $(BIN_DIR)"
	@echo "make demo     a simulated cluster, the playbook end to end (plan, backup, upgrade, network test)"
	@echo "make test     every test: fmt, clippy, cargo tests, Ansible runs"
	@echo "make dist     static musl builds of the modules, x86_64 and aarch64, into dist/bin"
	@echo "make collection  the k8s_calico.calico collection tarball (with the dist builds) in dist/"
	@echo "make bench    benchmarks, rewriting docs/benchmarks.md"
	@echo "make cluster-up    a real control plane (etcd, kube-apiserver, controller-manager,"
	@echo "                   scheduler, CLUSTER_NODES kwok nodes); writes .cluster/kubeconfig"
	@echo "make cluster-down  stop it"
	@echo "make controlplane  build (once, cached) the control plane's binaries from Go modules"

## Release binaries for this machine, where the collection's action plugins find them.
build: $(COLLECTION_LINK)
	$(CARGO) build --release --locked -p k8s-calico --bins
	@mkdir -p $(BIN_DIR)
	@for m in $(MODULES); do install -m 0755 target/release/$$m $(BIN_DIR)/$${m}_$(HOST_ARCH); done
	@echo "modules installed in $(BIN_DIR): $(addsuffix _$(HOST_ARCH),$(MODULES))"

$(COLLECTION_LINK):
	@mkdir -p $(dir $@)
	ln -sfn ../../../ansible $@

## ansible-core in a private virtualenv (nothing is installed system-wide).
venv: $(VENV)/.installed
$(VENV)/.installed: tests/ansible/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r tests/ansible/requirements.txt
	@touch $@

## The tools the probe script uses in the agnhost image, for its loopback test, those the
## package tests build their repository and Debian root with (dpkg-deb, apt-ftparchive, gpg,
## debootstrap), and qemu-user to run the aarch64 builds.
TEST_PACKAGES := curl netcat-openbsd bind9-dnsutils apt-utils gpg debootstrap qemu-user-static
test-tools:
	@if ! command -v curl >/dev/null || ! command -v nc >/dev/null || ! command -v nslookup >/dev/null \
		|| ! command -v apt-ftparchive >/dev/null || ! command -v gpg >/dev/null || ! command -v debootstrap >/dev/null \
		|| ! command -v qemu-aarch64-static >/dev/null; then \
		$(call APT_INSTALL,$(TEST_PACKAGES)); \
	fi

## The Debian root the package tests treat as a host (tests/hostroot/build.sh: debootstrap, about
## 3 minutes once), cached outside the checkout under the hash of the script that builds it.
HOSTROOT_CACHE ?= $(HOME)/.cache/k8s-calico
HOSTROOT := $(HOSTROOT_CACHE)/hostroot-$(shell sha256sum tests/hostroot/build.sh | cut -c1-12).tar
hostroot: $(HOSTROOT)
$(HOSTROOT): | test-tools
	tests/hostroot/build.sh $@

lint: venv $(COLLECTION_LINK)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/ansible-lint --offline --format=pep8 ansible/roles playbooks

## Everything CI checks. The Ansible end-to-end tests are Rust tests that drive the real
## ansible-playbook from the virtualenv; the end-to-end tests run on the real control plane
## (built first, cached). K8S_CALICO_NO_SKIP makes every test whose tools are missing fail
## instead of skip. The collection the tests install is built as `make collection` builds it,
## with PROFILE=ci-cross.
CI_COLLECTION := target/ci-collection
test: venv test-tools hostroot lint controlplane
	$(MAKE) --no-print-directory collection PROFILE=ci-cross DIST_DIR=$(CI_COLLECTION)
	K8S_CALICO_VENV=$(CURDIR)/$(VENV) K8S_CALICO_NO_SKIP=1 K8S_CALICO_HOSTROOT=$(HOSTROOT) \
		K8S_CALICO_CONTROLPLANE_BIN=$(CONTROLPLANE_BIN) \
		K8S_CALICO_COLLECTION=$(CURDIR)/$(CI_COLLECTION)/k8s_calico-calico-$(VERSION).tar.gz \
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

## Static binaries for x86_64 and aarch64 hosts whatever their libc, built on an x86_64 Linux
## machine. ring's and psm's C and assembly need a C compiler per target: musl-gcc (musl-tools)
## for x86_64; for aarch64 Debian's cross gcc, which also links (rustc brings musl's C runtime).
## PROFILE=ci-cross (what `make test` uses) builds the same without optimisation and LTO.
PROFILE ?= release
DIST_DIR ?= dist
MUSL_ARCHS := x86_64 aarch64
MUSL_TARGETS := $(addsuffix -unknown-linux-musl,$(MUSL_ARCHS))
DIST_ENV := CC_x86_64_unknown_linux_musl=musl-gcc \
	CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
dist:
	@[ "$$(uname -m)" = x86_64 ] || { echo "make dist cross-builds from x86_64 Linux; this machine is $$(uname -m)" >&2; exit 1; }
	@installed=$$(rustup target list --installed); for t in $(MUSL_TARGETS); do \
		echo "$$installed" | grep -qx $$t || rustup target add $$t; done
	@command -v musl-gcc >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null || \
		{ $(call APT_INSTALL,musl-tools gcc-aarch64-linux-gnu); }
	$(DIST_ENV) $(CARGO) build --profile $(PROFILE) --locked -p k8s-calico --bins $(addprefix --target ,$(MUSL_TARGETS))
	@mkdir -p $(DIST_DIR)/bin
	@for a in $(MUSL_ARCHS); do for m in $(MODULES); do \
		install -m 0755 target/$$a-unknown-linux-musl/$(PROFILE)/$$m $(DIST_DIR)/bin/$${m}_$$a; done; done
	@ls -l $(DIST_DIR)/bin

## The collection k8s_calico.calico: ansible/ (galaxy.yml, meta, plugins, roles, changelogs)
## with the playbooks and the static builds, staged under target/, its changelog released for
## this version by antsibull-changelog, built by ansible-galaxy into
## $(DIST_DIR)/k8s_calico-calico-$(VERSION).tar.gz.
COLLECTION_STAGE = target/collection-$(PROFILE)/ansible_collections/k8s_calico/calico
COLLECTION_TARBALL = $(DIST_DIR)/k8s_calico-calico-$(VERSION).tar.gz
collection: dist venv
	@galaxy=$$(sed -n 's/^version: //p' ansible/galaxy.yml); [ "$$galaxy" = "$(VERSION)" ] || \
		{ echo "ansible/galaxy.yml has version $$galaxy, Cargo.toml $(VERSION): they must be one" >&2; exit 1; }
	rm -rf $(COLLECTION_STAGE) && mkdir -p $(COLLECTION_STAGE)/playbooks $(COLLECTION_STAGE)/bin
	cp -R ansible/galaxy.yml ansible/README.md ansible/meta ansible/plugins ansible/roles ansible/changelogs $(COLLECTION_STAGE)/
	cp playbooks/*.yml $(COLLECTION_STAGE)/playbooks/
	install -m 0755 $(DIST_DIR)/bin/* $(COLLECTION_STAGE)/bin/
	find $(COLLECTION_STAGE) -name __pycache__ -prune -exec rm -rf {} +
	cd $(COLLECTION_STAGE) && PATH=$(CURDIR)/$(VENV)/bin:$$PATH antsibull-changelog release --is-collection \
		--version $(VERSION) --date $$(git log -1 --format=%cs 2>/dev/null || date -u +%F)
	$(VENV)/bin/ansible-galaxy collection build $(COLLECTION_STAGE) --output-path $(DIST_DIR) --force
	@ls -l $(COLLECTION_TARBALL)

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
	rm -rf $(VENV) dist .demo .cluster $(BIN_DIR) .collections
