# Two commands matter: `make demo` (the local demo) and `make test` (everything CI runs).
# Both install what they need: Python packages into .venv, Debian's puma (as root), the Kubernetes binaries
# (built from the Go module proxy) into ~/.cache/customer-friendly-operator.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | sha1sum | cut -c1-12)

BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: bench bench-quick chaos chaos-short help venv debian-packages k8s-binaries helm-binary images lint unit integration node test cluster cluster-down demo preflight install upgrade uninstall clean

help:
	@echo "make demo         run the local demo on an embedded control plane"
	@echo "make test         lint + unit + integration tests (real etcd, kube-apiserver, controller-manager)"
	@echo "make cluster      start the real node with the product installed and leave it up; prints KUBECONFIG"
	@echo "make cluster-down tear down what make cluster left up"
	@echo "make k8s-binaries build/cache etcd, kube-apiserver, kube-controller-manager, kubectl, kubelet,"
	@echo "                  kube-scheduler, kube-proxy and local-path-provisioner"
	@echo "make helm-binary  build/cache helm (the chart's tests: lint, template, install, upgrade, uninstall)"
	@echo "make images       build/cache our images (images/Dockerfile, by buildah) and the Puma app image"
	@echo "make bench        benchmarks (make bench-quick: a smaller run)"
	@echo "make chaos        faults at random moments of releases on the real node (TRIALS=200 SEED=1 FAULT=...)"
	@echo "make chaos-short  the chaos suite's short profile (24 trials, about 9 minutes)"
	@echo "make preflight    check the current kubectl context (and AWS) before installing"
	@echo "make install      install cluster-wide into the current kubectl context (upgrade, uninstall)"

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

k8s-binaries:
	@bash testbed/k8s/build.sh >/dev/null
	@bash testbed/k8s/build-provisioner.sh >/dev/null

helm-binary:
	@bash testbed/helm/build.sh >/dev/null

images: venv debian-packages
	$(PY) -m testbed.images >/dev/null

debian-packages:
	@bash scripts/debian-packages

# ruff (style, and McCabe complexity at most 10), import-linter (the layers in pyproject.toml),
# mypy (types of the product, the test bed and the benchmarks). Any violation fails.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	scripts/typecheck

unit: venv
	$(PY) -m pytest -q tests/unit

integration: venv debian-packages k8s-binaries helm-binary
	$(PY) -m pytest -q tests/integration

# Real pods on a real kubelet (root): tests/node and the demo.
node: venv debian-packages k8s-binaries helm-binary images
	$(PY) -m pytest -q -m node tests

# pytest exits 5 when it collects no test; make treats any non-zero exit as failure.
test: venv debian-packages k8s-binaries helm-binary images lint
	$(PY) -m pytest -q tests

cluster: venv debian-packages k8s-binaries images
	$(PY) -m testbed.cluster

cluster-down: venv
	$(PY) -m testbed.cluster --down

demo: venv debian-packages k8s-binaries images
	$(PY) -m testbed.demo

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	@touch $@

# Benchmarks print tables with ratios and write JSON and PNG charts to bench/results/.
bench: $(BENCH_STAMP) debian-packages k8s-binaries images
	$(PY) -m bench.release_strategies --runs 3 --boot-cpu 1.5 --request-cpu-ms 4 --rate 60 --control \
		--sweep max-unavailable=1,50%,100% --sweep ours-no-surge:max-unavailable=1
	$(PY) -m bench.webhook
	$(PY) -m bench.controller_scale
	$(PY) -m bench.puma_shutdown_race --restarts 100

bench-quick: export CFO_BENCH_RESULTS = bench/results/quick
bench-quick: $(BENCH_STAMP) debian-packages k8s-binaries images
	$(PY) -m bench.release_strategies --runs 1 --pre-stop 5 --pods 2 --rate 60 --boot-cpu 1.5 --request-cpu-ms 4
	$(PY) -m bench.webhook --seconds 2 --requests 50
	$(PY) -m bench.controller_scale --quick

# The chaos suite's long profile on a real node of its own: one fault per trial at a seeded moment
# of a release, under load; a table per fault kind to bench/results/chaos.json. A failing trial
# prints its replay command (make chaos SEED=<seed> TRIALS=1 FAULT=<fault>) and, when requests
# failed, what the Service's endpoints, the pods and kube-proxy's rules were meanwhile. The short
# profile (tests/node/test_chaos.py, 24 trials) runs in make test; `make chaos-short` runs it alone.
TRIALS ?= 200
SEED   ?= 1
chaos: venv debian-packages k8s-binaries images
	$(PY) -m testbed.chaos --trials $(TRIALS) --seed $(SEED) $(if $(FAULT),--fault $(FAULT))

chaos-short: venv debian-packages k8s-binaries helm-binary images
	$(PY) -m pytest -q -s -m chaos tests/node/test_chaos.py

# Cluster-wide install into the current kubectl context (KUBECONFIG / --context via CFO_ADMIN_ARGS).
preflight: venv
	$(VENV)/bin/cfo-admin preflight $(CFO_ADMIN_ARGS)

install: venv
	$(VENV)/bin/cfo-admin install $(CFO_ADMIN_ARGS)

upgrade: venv
	$(VENV)/bin/cfo-admin upgrade $(CFO_ADMIN_ARGS)

uninstall: venv
	$(VENV)/bin/cfo-admin uninstall $(CFO_ADMIN_ARGS)

clean:
	rm -rf $(VENV) .cluster .pytest_cache .ruff_cache *.egg-info
