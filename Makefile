# Two commands on a fresh machine:  make demo   (the main job, on a local control plane)
#                                   make test   (the whole suite)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export GOTOOLCHAIN := local
# The one image of the operator and the sidecar; manifests/ name the same (a test checks).
IMAGE        ?= leadership:0.1.0
KIND_CLUSTER ?= leadership
KUBECTL      ?= kubectl

.PHONY: help venv binaries node-prepare controlplane node gomod lock lint unit test demo \
	demo-processes demo-library bench bench-operator bench-stall bench-node bench-gate chaos clean \
	image kind-up kind-load deploy kind-down

help:
	@echo "make demo          the operator's story on real pods, on a node of this machine (root)"
	@echo "make demo-processes  the same story with processes standing in for pods (no root)"
	@echo "make demo-library  the library alone: Python and Go candidates on one Lease"
	@echo "make test          lint, type-check, and run every test (unit + integration)"
	@echo "make controlplane  start etcd + kube-apiserver + kube-controller-manager; print KUBECONFIG"
	@echo "make node          the same plus a real node with the project's image; print KUBECONFIG"
	@echo "make bench         run the benchmarks; writes docs/benchmarks.md"
	@echo "make bench-operator  the operator at 1,000 elections; writes docs/operator-scale.md"
	@echo "                    (BENCH_ARGS=\"--baseline DIR\": first the operator of checkout DIR)"
	@echo "make bench-stall   first-leader time under CPU saturation and slow round trips; docs/stall.md"
	@echo "make bench-node    traffic following the Lease on real pods, 30 trials; docs/node.md"
	@echo "make bench-gate    the sidecar's gate against a direct connection; docs/gate.md"
	@echo "make chaos         seeded faults for 5 min, checked for split brain; docs/reliability.md"
	@echo "make gomod         re-render controlplane/gomod from versions.env"
	@echo "make lock          re-generate image-lock.txt (the image's hashed dependencies)"
	@echo "With Docker and kind: make kind-up image kind-load deploy; make kind-down"

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

# etcd, kube-apiserver, kube-controller-manager, kubectl: built once per version, cached in
# $$LEADERSHIP_CONTROLPLANE_CACHE (default ~/.cache/leadership/controlplane).
binaries:
	$(PYTHON) -m controlplane.build etcd kube-apiserver kube-controller-manager kubectl leaderpeer leaseload

# The node's packages (apt), binaries (containerd, runc, CNI, kubelet, ...) and images (the
# Dockerfile's, with BuildKit): built once, cached. Says why and does nothing on a machine
# that cannot host a node (not root, not Linux, a kubelet or runtime of its own).
node-prepare: venv
	$(PY) -m controlplane.node prepare

controlplane: venv binaries
	$(PY) -m controlplane

node: venv binaries
	$(PY) -m controlplane --node

gomod:
	$(PYTHON) -m controlplane.build --render

# The image installs its Python dependencies from image-lock.txt, with hashes, the build
# backend included (pip install --require-hashes). Regenerate it after changing
# pyproject.toml's operator extra or constraints.txt; a test checks the two agree.
lock: venv
	cd $(CURDIR) && PIP_FIND_LINKS= CUSTOM_COMPILE_COMMAND="make lock" \
		$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--extra=operator --build-deps-for=wheel --constraint=constraints.txt \
		--no-emit-find-links --no-emit-index-url --output-file=image-lock.txt pyproject.toml

lint: venv
	$(PY) -m ruff check operator controlplane tests examples benchmarks chaos
	$(PY) -m mypy
	$(VENV)/bin/hadolint Dockerfile

unit: venv
	$(PY) -m pytest tests/unit

# Tests marked `node` (tests/e2e, tests/controlplane/test_node.py, the real-pod demo) need
# root on Linux; `make test PYTEST_ARGS='-m "not node"'` runs the rest anywhere.
PYTEST_ARGS ?=
test: venv binaries node-prepare lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: venv binaries
	$(PY) -m examples.node_demo

demo-processes: venv binaries
	$(PY) -m examples.operator_demo

demo-library: venv binaries
	$(PY) -m examples.demo

bench: venv binaries
	$(PY) -m benchmarks.run

bench-operator: venv binaries
	$(PY) -m benchmarks.operator_scale $(BENCH_ARGS)

bench-node: venv binaries
	$(PY) -m benchmarks.node

bench-gate: venv
	$(PY) -m benchmarks.gate

bench-stall: venv binaries
	command -v stress >/dev/null || (apt-get update -qq && apt-get install -y -qq stress)
	$(PY) -m benchmarks.stall

# Seeded faults against candidates, the sidecar and the operator:
#   make chaos [CHAOS_SECONDS=300] [CHAOS_SEED=<n> to replay a run]
CHAOS_SECONDS ?= 300
chaos: venv binaries
	$(PY) -m chaos.run --seconds $(CHAOS_SECONDS) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

# --- kind (a laptop with Docker and kind; not runnable on the CI machine, whose tests
# validate everything these targets apply against a real API server) -----------------------
kind-up:
	kind create cluster --config kind-config.yaml --name $(KIND_CLUSTER)

image:
	docker build -t $(IMAGE) .

kind-load:
	kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)

deploy:
	$(KUBECTL) apply -k manifests/operator
	$(KUBECTL) apply -k manifests/example
	$(KUBECTL) -n leadership-system rollout status deployment/leadership-operator --timeout=120s
	$(KUBECTL) -n leadership-example rollout status deployment/web --timeout=120s

kind-down:
	kind delete cluster --name $(KIND_CLUSTER)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
