# Two entry points do all set-up on a fresh machine:
#   make run   -> create .venv, install, open the app
#   make test  -> create .venv, install, run the whole suite headless
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
ARCH   := $(shell uname -m)
# torch/torchvision pins that this platform serves locally (x86_64: CUDA build; aarch64: CPU build)
ifeq ($(ARCH),aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: run test bench validate screenshots clean venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) main.py

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -n 2 -p no:cacheprovider

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m torchbudget.bench
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider -m acceptance

# on a CUDA machine: plan vs real runs, written into docs/validation.md (without CUDA: a dry run)
validate: $(STAMP)
	$(PY) -m torchbudget.bench.validation_battery --write docs/validation.md

screenshots: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m torchbudget.gui.screenshots docs/screenshots

clean:
	rm -rf $(VENV) build *.egg-info
