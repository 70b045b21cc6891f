# voc-dl: every step of the study from one command. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Real data: DATA is the folder that holds VOCdevkit/ (e.g. ../shared/voc); empty = embedded synthetic tree.
DATA ?=
YEAR ?= 2012
ACCELERATOR ?= auto
EPOCHS ?=
ARGS ?=

.PHONY: help install demo test lint bench clean-outputs

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision first and pinned, so pip never resolves a different build for them.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,cluster]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install voc-dl with its dev tools

demo: $(STAMP) ## the main job: every section briefly on the embedded synthetic data
	$(PY) -m voc_dl.demo $(ARGS)

test: $(STAMP) ## run the test suite (not the slow tests)
	$(PY) -m pytest -q

test-slow: $(STAMP) ## the slow tests too (real-data smoke runs)
	$(PY) -m pytest -q -m ''

lint: $(STAMP) ## ruff
	$(PY) -m ruff check voc_dl tests benchmarks

bench-data: $(STAMP) ## first-load versus cached-load time of the VOC preprocessing (DATA=... for real data)
	$(PY) benchmarks/data_cache.py $(if $(DATA),--root $(DATA) --year $(YEAR))
