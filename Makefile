# deployer-operator — the two commands: `make demo` (the main job) and `make test` (the tests).
# Everything else is a building block of those two.

SHELL := /bin/bash
.DEFAULT_GOAL := help

CLUSTER_DIR ?= .cluster
export CLUSTER_DIR
# CLUSTER=local (default): the control plane of tests/cluster, started on demand.
# CLUSTER=current: whatever cluster KUBECONFIG (or ~/.kube/config) points at.
CLUSTER ?= local
ifeq ($(CLUSTER),local)
KUBECONFIG := $(abspath $(CLUSTER_DIR))/kubeconfig
export KUBECONFIG
endif
E2E_THREADS ?= 12

# The tools the demos and the tests run besides the control plane, pinned in versions.env and built
# from Go modules by tests/cluster/build.sh (`make tools`) into DEPLOYER_CACHE. Scripts and tests
# use these paths, never what PATH happens to have (tests/support/mod.rs computes the same ones
# when run without make).
include tests/cluster/versions.env
DEPLOYER_CACHE ?= $(HOME)/.cache/deployer-operator
KUBECTL ?= $(DEPLOYER_CACHE)/k8s-$(K8S_VERSION)/kubectl
HELM ?= $(DEPLOYER_CACHE)/helm-$(HELM_VERSION)/helm
PROMETHEUS ?= $(DEPLOYER_CACHE)/prometheus-$(PROMETHEUS_VERSION)/prometheus
export DEPLOYER_CACHE KUBECTL HELM PROMETHEUS
IMG ?= deployer-operator:dev

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

## --- the two commands -------------------------------------------------------------------------

.PHONY: demo
demo: ## Local control plane + CRD + operator, the seed's nginx at 1.7.7, then 1.7.8 as a live canary; the operator killed mid-wait
	@bash scripts/demo.sh

.PHONY: demo-checks
demo-checks: ## Step gates for real: a Prometheus success-rate check passes 1.0.1 and rolls 1.0.2 back (docs/checks.md)
	@bash scripts/checks-demo.sh

.PHONY: test
test: lint test-unit image-test test-e2e ## Lint, unit and property tests, the image test, then end-to-end tests on the local control plane

.PHONY: test-node
test-node: ## The operator's image as 2 pods on real nodes: make deploy, rollouts, leader handover, restart mid-rollout
ifeq ($(CLUSTER),local)
	@$(MAKE) --no-print-directory deploy
	cargo test --locked --test e2e_node -- --nocapture --test-threads=1
else
	@echo "test-node runs on the local control plane's real nodes only (CLUSTER=local)" >&2; exit 1
endif

## --- building blocks --------------------------------------------------------------------------

.PHONY: build
build: ## Build the operator (release)
	cargo build --release --locked

.PHONY: lint
lint: ## cargo fmt --check, clippy -D warnings, and the CRD drift check
	@cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
	cargo fmt --all -- --check
	# --all-targets leaves out the tests with `test = false` (make faults, make test-node): named here.
	cargo clippy --locked --all-targets --test e2e_faults_slow --test e2e_node -- -D warnings

.PHONY: test-unit
test-unit: ## Unit, table and property tests of the pure parts (no cluster)
	cargo test --locked --lib --bins

.PHONY: test-e2e
test-e2e: ## End-to-end tests; brings the local control plane up and builds the tools first (CLUSTER=current: use KUBECONFIG)
ifeq ($(CLUSTER),local)
	@$(MAKE) --no-print-directory cluster-up no-deployed-operator
endif
	@$(MAKE) --no-print-directory tools
	cargo test --locked --no-fail-fast --tests -- --test-threads=$(E2E_THREADS)

# The plot's matplotlib lives in a venv under target/ (installed from PyPI the first time).
BENCH_VENV := target/bench/venv

# PEERS=argo: also the same canary workload on Argo Rollouts, side by side (docs/performance.md);
# its controller is built from its Go module first (benches/peers/argo/build.sh, cached).
# PEER_RUNS=k repeats each pair; BENCH_OWN=0 skips the operator-only part.
PEERS ?=
export PEERS

.PHONY: bench
bench: ## Benchmark: N Deployers rolled out at once (BENCH_SIZES=10,100,1000; PEERS=argo side by side); under target/bench/
	@set -e; if [[ ",$(PEERS)," == *,argo,* ]]; then bash benches/peers/argo/build.sh >/dev/null; fi
ifeq ($(CLUSTER),local)
	@$(MAKE) --no-print-directory cluster-up no-deployed-operator
endif
	@set -e; if [[ ",$(PEERS)," == *,argo,* ]]; then eval "$$(bash benches/peers/argo/build.sh)"; \
	  export ARGO_BIN ARGO_CRDS ARGO_VERSION; fi; \
	  cargo bench --locked --bench rollouts
	@$(MAKE) --no-print-directory bench-plot

.PHONY: bench-plot
bench-plot: $(BENCH_VENV)/.ok ## The PNG plots of the last `make bench` (target/bench/rollouts.png, peers.png)
	@if [ -f target/bench/rollouts.json ]; then $(BENCH_VENV)/bin/python scripts/bench-plot.py --json target/bench/rollouts.json --out target/bench/rollouts.png; fi
	@if [ -f target/bench/peers.json ]; then $(BENCH_VENV)/bin/python scripts/bench-plot.py --peers target/bench/peers.json --out target/bench/peers.png; fi

$(BENCH_VENV)/.ok:
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check 'matplotlib>=3.8,<4'
	touch $@

# `make chaos`: the full chaos run (tests/e2e_chaos.rs). `make test` runs its short version (6
# rollouts, 6 kills, no control-plane restart: the other tests share that control plane).
CHAOS_ROLLOUTS ?= 50
CHAOS_KILLS ?= 20

.PHONY: chaos
chaos: ## Chaos: 50 rollouts, >= 20 kill -9 of the operator, apiserver + etcd restarts, hand edits; a checker throughout
ifeq ($(CLUSTER),local)
	@$(MAKE) --no-print-directory cluster-up no-deployed-operator
endif
	CHAOS_ROLLOUTS=$(CHAOS_ROLLOUTS) CHAOS_KILLS=$(CHAOS_KILLS) \
	CHAOS_CONTROL_PLANE=$(if $(filter local,$(CLUSTER)),1,0) \
	cargo test --locked --test e2e_chaos -- --nocapture

# `make faults`: the fault tests too slow for every `make test` (tests/e2e_faults_slow.rs; over 90 s
# each, and they measure time): a leader frozen (SIGSTOP) past its lease, and 40 hanging webhooks
# beside a plain rollout. One at a time (tests/e2e_faults_slow.rs, not part of `make test`); `.ci/run` runs both.
.PHONY: faults
faults: ## Faults: the leader frozen past its lease (SIGSTOP), 40 hanging webhooks beside a plain rollout
ifeq ($(CLUSTER),local)
	@$(MAKE) --no-print-directory cluster-up no-deployed-operator
endif
	@$(MAKE) --no-print-directory tools
	cargo test --locked --test e2e_faults_slow -- --test-threads=1 --nocapture

.PHONY: crds
crds: ## Regenerate crds/ (and the Helm chart's copy) from the Rust types
	cargo run --quiet --locked -- crd > crds/deployer.yaml
	cp crds/deployer.yaml deploy/helm/deployer-operator/crds/deployer.yaml

.PHONY: tools
tools: ## Build (first time) the pinned kubectl, helm and Prometheus the demos and tests use
	@bash tests/cluster/build.sh kubectl helm prometheus >/dev/null

.PHONY: kubectl-bin
kubectl-bin:
	@bash tests/cluster/build.sh kubectl >/dev/null

.PHONY: cluster-up
cluster-up: ## Build (first time) and start the local control plane under $(CLUSTER_DIR)
	@bash tests/cluster/cluster.sh up

.PHONY: cluster-down
cluster-down: ## Stop the demo's operator and the local control plane (only what they started); remove the state
	@bash scripts/demo.sh stop
	@bash tests/cluster/cluster.sh down

.PHONY: cluster-status
cluster-status: ## Health of the local control plane
	@bash tests/cluster/cluster.sh status

# The operator make deploy runs on the local real nodes watches every namespace: beside the tests'
# and benchmarks' own operator processes it would be a second operator on their Deployers.
.PHONY: no-deployed-operator
no-deployed-operator:
	@if [ "$$(kubectl -n deployer-system get deployment deployer-operator -o jsonpath='{.spec.template.spec.hostNetwork}' 2>/dev/null)" = true ]; then \
	  echo "make: removing the operator make deploy put on the real nodes (it would act on the tests' Deployers too; make deploy puts it back)"; \
	  $(MAKE) --no-print-directory undeploy; \
	fi

.PHONY: node-up
node-up: ## Add the real nodes (kubelet + containerd + runc) to the local control plane (starts it if needed)
	@bash tests/cluster/cluster.sh node up

.PHONY: node-down
node-down: ## Stop the real nodes and their containers (the control plane stays)
	@bash tests/cluster/cluster.sh node down

.PHONY: node-status
node-status: ## Health of the real nodes
	@bash tests/cluster/cluster.sh node status

.PHONY: install
install: kubectl-bin ## Apply the CRD (crds/) to the cluster of KUBECONFIG
	$(KUBECTL) apply --server-side --force-conflicts -f crds/
	$(KUBECTL) wait --for=condition=Established --timeout=60s crd/deployers.deploy.example.com

.PHONY: uninstall
uninstall: kubectl-bin ## Remove the CRD (and with it every Deployer and the Deployments they own)
	$(KUBECTL) delete --ignore-not-found -f crds/

.PHONY: run
run: ## Run the operator locally against KUBECONFIG
	cargo run --locked -- run

## --- image and deployment ---------------------------------------------------------------------
# The operator's container image, and the operator in a cluster (docs/operations.md). deploy and
# undeploy act on the cluster of KUBECONFIG like every target above: CLUSTER=local (the default) is
# the local control plane, where make deploy runs the image `make image` built (by digest) as pods
# on its real nodes (deploy/ + deploy/local/); CLUSTER=current is yours. IMG must carry an explicit
# tag (or, for deploy, a digest), never :latest.

DOCKER ?= docker
# deploy (cluster-wide) or deploy/namespaced; DEPLOY_NAMESPACE, if set, overrides the namespace.
DEPLOY_DIR ?= deploy
DEPLOY_NAMESPACE ?=
DEPLOY_TIMEOUT ?= 120s
MINIKUBE ?= minikube
MINIKUBE_PROFILE ?= minikube
# docker-env: build inside minikube's Docker; load: docker build here, then `minikube image load`;
# archive: make image (buildah, no Docker), then `minikube image load` of its archive.
MINIKUBE_IMAGE_SOURCE ?= docker-env
# Where minikube wrote its context: ~/.kube/config, or your KUBECONFIG with CLUSTER=current.
ifeq ($(CLUSTER),local)
MINIKUBE_KUBECONFIG ?= $(HOME)/.kube/config
else
MINIKUBE_KUBECONFIG ?= $(or $(KUBECONFIG),$(HOME)/.kube/config)
endif
DEPLOY_ENV = IMG='$(IMG)' DEPLOY_DIR='$(DEPLOY_DIR)' DEPLOY_NAMESPACE='$(DEPLOY_NAMESPACE)' \
	DEPLOY_TIMEOUT='$(DEPLOY_TIMEOUT)' DOCKER='$(DOCKER)' MINIKUBE='$(MINIKUBE)' \
	MINIKUBE_PROFILE='$(MINIKUBE_PROFILE)' MINIKUBE_IMAGE_SOURCE='$(MINIKUBE_IMAGE_SOURCE)' \
	MINIKUBE_KUBECONFIG='$(MINIKUBE_KUBECONFIG)'

.PHONY: docker-build
docker-build: ## Build the image IMG=name:tag (needs a container engine)
	@$(DEPLOY_ENV) bash scripts/deploy.sh check-img
	$(DOCKER) build -t '$(IMG)' .

.PHONY: image
image: ## Build the image here without Docker or a registry (buildah, the same Dockerfile): target/image/deployer-operator.oci.tar
	@IMG='$(IMG)' bash scripts/image.sh build

.PHONY: image-test
image-test: image ## Inspect the archive of make image (user, entrypoint, files, CA bundle, size) and run it under runc
	@bash scripts/image.sh test

.PHONY: image-check
image-check: ## Without a container engine: build the image's static musl binary as the Dockerfile does and check it
	@bash scripts/image-check.sh

.PHONY: deploy
deploy: ## CRD (make install), then the operator (DEPLOY_DIR, default deploy/) with image IMG; waits for its rollout
ifeq ($(CLUSTER),local)
	@$(MAKE) --no-print-directory node-up install
	@$(DEPLOY_ENV) bash scripts/deploy.sh local
else
	@$(DEPLOY_ENV) bash scripts/deploy.sh check-img digest-ok
	@$(MAKE) --no-print-directory install
	@$(DEPLOY_ENV) bash scripts/deploy.sh apply
endif

.PHONY: undeploy
undeploy: ## Remove the operator (DEPLOY_DIR); the CRD, the Deployers and their Deployments stay
ifeq ($(CLUSTER),local)
	@$(DEPLOY_ENV) bash scripts/deploy.sh local-delete
else
	@$(DEPLOY_ENV) bash scripts/deploy.sh delete
endif

.PHONY: minikube-deploy
minikube-deploy: ## Build the image inside minikube with a unique tag, then make install + deploy there
	@$(DEPLOY_ENV) bash scripts/deploy.sh minikube
