# odm-basicsr: install, test and demo on a fresh machine (CPU is enough).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast demo options clean

install: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# 1. torch first (basicsr's build needs it), 2. basicsr 1.4.2 without build isolation, 3. this package
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1 numpy cython
	$(PIP) install -q --no-build-isolation basicsr==1.4.2
	$(PIP) install -q --no-build-isolation -e '.[test,export,openvino,plot]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q tests

test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

# The main job end to end on scikit-image photos (no download): FP vs w4a4 / w2a2, ODM vs plain QAT. A small proxy.
demo: install
	$(PY) -m odm_basicsr demo

# Regenerate options/ from odm_basicsr/tools/option_grid.py (a test checks they agree).
options: install
	$(PY) -m odm_basicsr.tools.option_grid

clean:
	rm -rf experiments results tb_logger datasets/demo
