# Two commands on a fresh machine:  make demo   (the main job, on a local control plane)
#                                   make test   (the whole suite)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export GOTOOLCHAIN := local

.PHONY: help venv binaries controlplane gomod lint unit test demo bench bench-operator clean

help:
	@echo "make demo          run the demo on a local control plane (built on first use)"
	@echo "make test          lint, type-check, and run every test (unit + integration)"
	@echo "make controlplane  start etcd + kube-apiserver + kube-controller-manager; print KUBECONFIG"
	@echo "make bench         run the benchmarks; writes docs/benchmarks.md"
	@echo "make bench-operator  the operator at 1,000 elections; writes docs/operator-scale.md"
	@echo "make gomod         re-render controlplane/gomod from versions.env"

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

# etcd, kube-apiserver, kube-controller-manager, kubectl: built once per version, cached in
# $$LEADERSHIP_CONTROLPLANE_CACHE (default ~/.cache/leadership/controlplane).
binaries:
	$(PYTHON) -m controlplane.build etcd kube-apiserver kube-controller-manager kubectl leaderpeer

controlplane: venv binaries
	$(PY) -m controlplane

gomod:
	$(PYTHON) -m controlplane.build --render

lint: venv
	$(PY) -m ruff check operator controlplane tests examples benchmarks
	$(PY) -m mypy

unit: venv
	$(PY) -m pytest tests/unit

test: venv binaries lint
	$(PY) -m pytest

demo: venv binaries
	$(PY) -m examples.demo

bench: venv binaries
	$(PY) -m benchmarks.run

bench-operator: venv binaries
	$(PY) -m benchmarks.operator_scale

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
