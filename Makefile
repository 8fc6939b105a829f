# gmemtest: common commands. `make vm-test` is the main job, `make test` the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
GMEMTEST := $(VENV)/bin/gmemtest
HOST_STAMP := $(VENV)/.bootstrap-host
VM_STAMP := $(VENV)/.bootstrap-vm
# The host suite in parallel; its slowest tests named at the end (where CI's time goes).
PYTEST_ARGS ?= -n auto --durations=20

.PHONY: setup setup-vm test test-serial lint caps kernel image vm-test vm-harness bench matrix clean

setup: $(HOST_STAMP)
# The uAPI declarations are compiled at install: a change to them installs again.
INSTALL_INPUTS := pyproject.toml setup.py scripts/bootstrap gmemtest/kvm/cdefs.py gmemtest/kvm/_build_cffi.py
$(HOST_STAMP): $(INSTALL_INPUTS)
	scripts/bootstrap
	touch $@

setup-vm: $(VM_STAMP)
$(VM_STAMP): $(INSTALL_INPUTS)
	scripts/bootstrap --vm
	touch $@ $(HOST_STAMP)

## The tests on this machine's kernel (lint, then pytest; what needs a missing capability skips
## naming it). The same suite runs inside the guest in `make vm-test`.
test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

## The host suite alone, serially.
test-serial: setup
	$(PY) -m pytest -p no:xdist

## ruff over everything; mypy --strict over the package; the layering contract (pyproject.toml,
## [tool.importlinter]): no module imports from a layer above its own.
lint: setup
	$(VENV)/bin/ruff check gmemtest tests vmimages
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(GMEMTEST) kpatches check

caps: setup
	$(GMEMTEST) caps

kernel: setup-vm
	$(GMEMTEST) kernel build $(if $(BASE),--base $(BASE))

## The self-contained root image (debootstrap), for runners whose root cannot be shared with
## the guest; `gmemtest vm-test --image debian` boots it.
image: setup-vm
	$(GMEMTEST) vm image

## Main job: fetch and build the patched kernel, boot it with in-place conversion on and off,
## run the whole suite in each, print one combined report. BASE=7.2 takes that Debian base
## instead of the newest that Debian offers and kpatches/ supports.
vm-test: setup-vm
	$(GMEMTEST) vm-test $(if $(BASE),--base $(BASE))

## The harness's own tests in a guest, in one boot with in-place conversion on (the main job's
## boots run the kernel's tests only): CI runs it after the main job, from the same build.
vm-harness: setup-vm
	$(GMEMTEST) vm-test --harness $(if $(BASE),--base $(BASE))

## gmemtest against the upstream KVM selftests, and micro-benchmarks, in one boot.
bench: setup-vm
	$(GMEMTEST) bench

## The nightly matrix (6 builds, 11 boots); pass BASELINE=DIR/matrix.json to compare.
matrix: setup-vm
	$(GMEMTEST) matrix --config matrices/nightly.toml $(if $(BASELINE),--baseline $(BASELINE))

clean:
	rm -rf results .pytest_cache
