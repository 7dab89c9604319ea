# odm-basicsr: install, test and demo on a fresh machine (CPU is enough).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast clean

install: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# 1. torch first (basicsr's build needs it), 2. basicsr 1.4.2 without build isolation, 3. this package
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1 numpy cython
	$(PIP) install -q --no-build-isolation basicsr==1.4.2
	$(PIP) install -q --no-build-isolation -e '.[test,export]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q tests

test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

clean:
	rm -rf experiments results tb_logger datasets/demo
