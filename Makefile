# The two commands of the README: `make demo` and `make test`. Both create .venv themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
EXTRAS ?= train,cpu,eval,dev

.PHONY: setup demo test test-fast lint clean

setup: $(VENV)/.installed

# torch/torchvision are pinned (2.14.1 / 0.29.1) in the [train] extra; pip takes them from local disk here.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: setup
	bash scripts/demo.sh $(VENV)

# System counterparts for the camera/deploy tests (apt, only as root; tests skip with a reason otherwise).
test: setup
	bash scripts/install-test-deps.sh $(VENV)
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not counterpart"

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) demo-out .pytest_cache
