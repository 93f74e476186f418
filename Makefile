# Two commands on a fresh machine: `make demo` and `make test`.
# The virtual environment is cached outside the clone, keyed by the digest of the two
# pyproject.toml files (the daemon's and proving/'s), so that torch (a multi-GB wheel) is
# installed once per machine and dependency set.
CACHE ?= $(or $(BROKER_FILTER_CACHE),$(HOME)/.cache/broker-filter)
VENV := $(CACHE)/venv-$(shell cat pyproject.toml proving/pyproject.toml | sha256sum | cut -c1-12)
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: venv demo test bench clean-venv

$(VENV)/.installed: pyproject.toml proving/pyproject.toml
	mkdir -p $(CACHE)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]' -e ./proving
	touch $@

# Re-point the cached environment at this clone (cheap: no dependencies are touched).
venv: $(VENV)/.installed
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e . -e ./proving

demo: venv
	$(VENV)/bin/broker-filter replay data/alerts data/demo --out out/demo
	@cat out/demo/summary.json

test: venv
	$(PY) -m pytest -q -x --durations=15

bench: venv
	$(VENV)/bin/broker-filter bench decode

clean-venv:
	rm -rf $(VENV)
