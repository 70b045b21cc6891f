# voc-dl: every step of the study from one command. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Where the data come from: DATASET=synthetic (embedded) | shared_voc (../shared/voc) | voc2009;
# or DATA=/folder/holding/VOCdevkit YEAR=2009 for any other tree (DATA wins over DATASET).
DATASET ?= synthetic
DATA ?=
YEAR ?= 2009
ACCELERATOR ?= auto
PRECISION ?=
EPOCHS ?=
ARGS ?=
# One study folder and report per data set: the section targets resume or skip what they find in STUDY, which
# must be runs of the same data. A DATA tree is named by its folder, year and a hash of its path.
DATA_NAME := $(if $(DATA),$(notdir $(abspath $(DATA)))-$(YEAR)-$(shell printf %s "$(abspath $(DATA))" | md5sum | cut -c1-6),$(DATASET))
STUDY ?= outputs/study/$(DATA_NAME)
REPORT ?= outputs/report/$(DATA_NAME)
PRETRAINED_WEIGHTS ?= IMAGENET1K_V1
# code sizes of experiment=autoencoder_improved in `make autoencoder` (e.g. 2048,4096,8192)
IMPROVED_CODES ?= 2048
# SEEDS=3: every job of the section targets runs with seeds 1..3 (the report shows mean ± std over them);
# empty: one run per job, with the config's seed (42).
SEEDS ?=
ifneq ($(SEEDS),)
ifneq ($(shell [ "$(SEEDS)" -ge 1 ] 2>/dev/null && echo ok),ok)
$(error SEEDS=$(SEEDS): give the number of seeds, e.g. SEEDS=3)
endif
endif
SEEDS_ALL := $(if $(SEEDS),seed=$(shell seq -s, 1 $(SEEDS)))
# the runs later steps read (the encoder, the teacher) are seed 1's; their other seeds are a sweep beside them
SEED_FIRST := $(if $(SEEDS),seed=1)
SEEDS_REST := $(if $(SEEDS),$(if $(filter-out 1,$(SEEDS)),seed=$(shell seq -s, 2 $(SEEDS))))
# Runs that later steps read are single runs in folders of their own: a sweep names job folders by their
# overrides, which PRECISION= or ARGS= change, so no line below guesses such a name.
# Section 1's 8192-code MSE autoencoder (one of Table 1's six jobs), the encoder of `make classifiers`:
ENCODER_RUN := $(STUDY)/encoder
ENCODER ?= $(ENCODER_RUN)/checkpoints/best.ckpt
# the improved U-Net of `make segmentation`, the teacher of self-training, and the masks it writes:
TEACHER_RUN := $(STUDY)/teacher
TEACHER ?= $(TEACHER_RUN)/checkpoints/best.ckpt
PSEUDO_LABELS ?= $(STUDY)/pseudo_labels

DATA_ARGS := $(if $(DATA),dataset=voc2009 data.root=$(abspath $(DATA)) data.year=$(YEAR),dataset=$(DATASET))
COMMON := $(DATA_ARGS) trainer.accelerator=$(ACCELERATOR) $(if $(PRECISION),trainer.precision=$(PRECISION)) \
	$(if $(EPOCHS),trainer.max_epochs=$(EPOCHS)) $(ARGS)
# The section targets carry on where they stopped: resume=true skips the jobs finished with the same config and
# continues interrupted ones from last.ckpt (docs/reliability.md, "Resume"); FORCE=1 trains every job again.
JOB := resume=$(if $(FORCE),false,true) $(COMMON)
TRAIN := $(PY) -m voc_dl.train
SWEEP := $(TRAIN) -m
TRAIN_ENCODER := $(TRAIN) experiment=autoencoder model.code_size=8192 model.loss=mse hydra.run.dir=$(ENCODER_RUN) \
	$(SEED_FIRST) $(JOB)
# pseudo-labelling reads the tree the runs read (DATA, DATASET and ARGS' data.* keys); the teacher fixes the rest
PSEUDO_DATA := $(DATA_ARGS) $(filter data.% +data.% ++data.%,$(ARGS))

.PHONY: help install demo test test-slow lint bench bench-fidelity bench-data bench-epoch autoencoder classifiers segmentation report report-check tensorboard all

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision first, at pyproject.toml's pins, so pip never resolves a different build for them.
	$(PY) -m pip install -q $$(grep -oE '"torch(vision)?==[0-9.]+"' pyproject.toml | tr -d '"')
	$(PY) -m pip install -q -e '.[dev,cluster,search,export]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install voc-dl with its dev tools

demo: $(STAMP) ## the main job: every section, shortened, on the embedded synthetic data (ARGS: overrides for every run)
	$(PY) -m voc_dl.demo $(ARGS)

# The numerics tests run again with oneDNN and ATen capped at AVX2: on an AVX-512/AMX CPU that stands in
# for the AVX2-only family, so a tolerance that holds on one family only fails here, not on a user's machine.
# On a CPU without AVX-512 the caps change nothing: the first pass was that run already.
AVX2_CAPS := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2

test: $(STAMP) ## run the test suite (not the slow tests), then its numerics tests under AVX2 caps on an AVX-512 CPU
	$(PY) -m pytest -q
	@if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then \
		echo "$(AVX2_CAPS) $(PY) -m pytest -q -m numerics"; $(AVX2_CAPS) $(PY) -m pytest -q -m numerics; \
	else echo "numerics under AVX2 caps: not repeated, this CPU has no AVX-512 (the run above was AVX2)"; fi

test-slow: $(STAMP) ## the slow tests too (real-data smoke runs)
	$(PY) -m pytest -q -m ''

lint: $(STAMP) ## ruff
	$(PY) -m ruff check voc_dl hydra_plugins tests benchmarks

# The data benchmark reads DATA=... (or DATASET=shared_voc: ../shared/voc, VOC2012, cat/dog/person), else synthetic.
BENCH_DATA := $(if $(DATA),--root $(DATA) --year $(YEAR),$(if $(filter shared_voc,$(DATASET)),--root ../shared/voc --year 2012 --classes cat dog person))

bench: $(STAMP) ## the performance report: every net against the matmul peak, voc-dl's loop against a hand-written one, data cache
	$(PY) benchmarks/train_speed.py $(ARGS)
	$(PY) benchmarks/loop_overhead.py
	$(PY) benchmarks/data_cache.py $(BENCH_DATA)
	cat outputs/bench/train_speed.md outputs/bench/loop_overhead.md outputs/bench/data_cache.md > outputs/bench/report.md
	@echo "bench report: outputs/bench/report.md (JSON beside it)"

bench-fidelity: $(STAMP) ## fp32 versus the fast default: end-of-run metrics (+ seed spread), then lockstep against one ulp (DATASET=..., ARGS="--seeds 3 --jobs 6"; ~2 h on 2 CPU cores)
	@# lockstep runs even when fidelity fails (it is the explanation); make then fails with fidelity's status
	$(if $(DATA),$(error bench-fidelity takes a named data set: DATASET=synthetic|shared_voc|shared_voc_study, not DATA=))
	$(PY) benchmarks/fidelity.py --dataset $(DATASET) $(ARGS); status=$$?; \
	$(PY) benchmarks/lockstep.py --dataset $(DATASET) && exit $$status

bench-data: $(STAMP) ## first-load versus cached-load time of the VOC preprocessing (DATA=... or DATASET=shared_voc)
	$(PY) benchmarks/data_cache.py $(BENCH_DATA)

bench-epoch: $(STAMP) ## seconds per epoch of the study's autoencoder through voc-dl's own trainer (DATASET=shared_voc_study; slow on CPU)
	$(PY) benchmarks/epoch_time.py $(COMMON)

autoencoder: $(STAMP) ## Section 1: code size x loss (6 jobs, 8192/MSE in STUDY/encoder), the improved recipe (IMPROVED_CODES), PCA baseline, Table 1, Figures 2-3
	@# as in a sweep, a failing job is recorded (its metrics.json, the report's table) and the others go on
	-$(TRAIN_ENCODER)
	$(if $(SEEDS_REST),$(SWEEP) experiment=autoencoder model.code_size=8192 model.loss=mse $(SEEDS_REST) \
		hydra.sweep.dir=$(STUDY)/autoencoder $(JOB))
	$(SWEEP) experiment=autoencoder model.code_size=2048,4096 model.loss=mse,mae $(SEEDS_ALL) \
		hydra.sweep.dir=$(STUDY)/autoencoder $(JOB)
	$(SWEEP) experiment=autoencoder model.code_size=8192 model.loss=mae $(SEEDS_ALL) hydra.sweep.dir=$(STUDY)/autoencoder \
		$(JOB)
	$(SWEEP) experiment=autoencoder_improved model.code_size=$(IMPROVED_CODES) $(SEEDS_ALL) \
		hydra.sweep.dir=$(STUDY)/autoencoder_improved $(JOB)
	$(PY) -m voc_dl.report --runs $(STUDY) --out $(REPORT) --section autoencoder

$(ENCODER_RUN)/checkpoints/best.ckpt: | $(STAMP)
	$(TRAIN_ENCODER)

classifiers: $(STAMP) $(ENCODER) ## Section 2: four classifiers (+ augmented deep CNN, the searched recipe), Table 2, Figure 4
	$(SWEEP) experiment=classification model=frozen_encoder "model.encoder_ckpt='$(abspath $(ENCODER))'" $(SEEDS_ALL) \
		hydra.sweep.dir=$(STUDY)/classification/frozen $(JOB)
	$(SWEEP) experiment=classification model=encoder,deep_cnn $(SEEDS_ALL) hydra.sweep.dir=$(STUDY)/classification/scratch \
		$(JOB)
	$(SWEEP) experiment=classification model=deep_cnn model.augment=true $(SEEDS_ALL) \
		hydra.sweep.dir=$(STUDY)/classification/augmented $(JOB)
	$(SWEEP) experiment=classification_improved $(SEEDS_ALL) hydra.sweep.dir=$(STUDY)/classification/improved $(JOB)
	$(SWEEP) experiment=classification model=pretrained model.net.backbone=alexnet,resnet18 \
		model.net.weights=$(PRETRAINED_WEIGHTS) $(SEEDS_ALL) hydra.sweep.dir=$(STUDY)/classification/pretrained $(JOB)
	$(PY) -m voc_dl.report --runs $(STUDY) --out $(REPORT) --section classification

segmentation: $(STAMP) ## Section 3: BCE versus Dice on the study's net and the U-Net, the improved recipe (the teacher, STUDY/teacher), pseudo-labelling, self-training, Table 3, Figures 5-8
	$(SWEEP) experiment=segmentation model=segnet,unet model.loss=bce,dice $(SEEDS_ALL) \
		hydra.sweep.dir=$(STUDY)/segmentation $(JOB)
	$(TRAIN) experiment=segmentation_improved hydra.run.dir=$(TEACHER_RUN) $(SEED_FIRST) $(JOB)
	$(if $(SEEDS_REST),$(SWEEP) experiment=segmentation_improved $(SEEDS_REST) \
		hydra.sweep.dir=$(STUDY)/segmentation_improved $(JOB))
	$(SWEEP) experiment=segmentation_improved model=segnet model.augment=false trainer.max_epochs=60 $(SEEDS_ALL) \
		hydra.sweep.dir=$(STUDY)/segmentation_improved $(JOB)
	$(PY) -m voc_dl.pseudo_label "ckpt_path='$(abspath $(TEACHER))'" "out='$(abspath $(PSEUDO_LABELS))'" $(PSEUDO_DATA)
	$(SWEEP) experiment=segmentation_selftrain "data.extra_masks='$(abspath $(PSEUDO_LABELS))'" $(SEEDS_ALL) \
		hydra.sweep.dir=$(STUDY)/segmentation_selftrain $(JOB)
	$(PY) -m voc_dl.report --runs $(STUDY) --out $(REPORT) --section segmentation

all: $(STAMP) ## the whole study: Sections 1-3 (a section or job already done is skipped unless FORCE=1), then the report
	$(if $(FORCE),rm -f $(STUDY)/autoencoder/.done $(STUDY)/classification/.done $(STUDY)/segmentation/.done)
	$(MAKE) $(STUDY)/autoencoder/.done
	$(MAKE) $(STUDY)/classification/.done
	$(MAKE) $(STUDY)/segmentation/.done
	$(MAKE) report

$(STUDY)/autoencoder/.done:
	$(MAKE) autoencoder
	touch $@

$(STUDY)/classification/.done:
	$(MAKE) classifiers
	touch $@

$(STUDY)/segmentation/.done:
	$(MAKE) segmentation
	touch $@

report: $(STAMP) ## tables and figures of every run under STUDY (REPORT/index.html, report.md)
	$(PY) -m voc_dl.report --runs $(STUDY) --out $(REPORT)

SCREENSHOT ?=
report-check: $(STAMP) ## REPORT's index.html in headless Chromium: every image loads, nothing wider than 1280 px, every link resolves (SCREENSHOT=file.png saves the top)
	$(PY) -m voc_dl.report.check $(REPORT) $(if $(SCREENSHOT),--screenshot $(SCREENSHOT))

LOGDIR ?= outputs
HOST ?= 127.0.0.1
PORT ?= 6006
tensorboard: $(STAMP) ## TensorBoard on LOGDIR (outputs), this machine only unless HOST=0.0.0.0; PORT=6006
	@echo "TensorBoard at http://$(HOST):$(PORT)"
	$(VENV)/bin/tensorboard --logdir $(LOGDIR) --host $(HOST) --port $(PORT)
