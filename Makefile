# k8s-calico. `make demo` and `make test` are all a fresh machine needs (Rust, Python 3, apt).
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

.PHONY: build venv test-tools test lint demo dist bench clean help

help:
	@echo "make          build the modules (release) into $(LIBRARY)"
	@echo "make demo     a simulated cluster, the playbook end to end (plan, backup, upgrade, network test)"
	@echo "make test     every test: fmt, clippy, cargo tests, Ansible runs"
	@echo "make dist     static musl build of the modules into dist/"
	@echo "make bench    benchmarks, rewriting docs/benchmarks.md"

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

## The tools the probe script uses in the agnhost image, for its loopback test.
TEST_PACKAGES := curl netcat-openbsd bind9-dnsutils
test-tools:
	@if ! command -v curl >/dev/null || ! command -v nc >/dev/null || ! command -v nslookup >/dev/null; then \
		$(call APT_INSTALL,$(TEST_PACKAGES)); \
	fi

lint: venv
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/ansible-lint --offline --format=pep8 ansible/roles playbooks

## Everything CI checks. The Ansible end-to-end tests are Rust tests that drive the real
## ansible-playbook from the virtualenv; K8S_CALICO_NO_SKIP makes every test whose tools are
## missing fail instead of skip.
test: venv test-tools lint
	K8S_CALICO_VENV=$(CURDIR)/$(VENV) K8S_CALICO_NO_SKIP=1 \
		$(CARGO) test --locked --workspace

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
	rm -rf $(VENV) dist .demo $(addprefix $(LIBRARY)/,$(MODULES))
