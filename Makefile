# ML Learning Lab. `make setup` once, then `make test`. `make help` lists the targets.
PY := .venv/bin/python
NOTEBOOKS := $(wildcard notebooks/[0-9]*.py)
NB ?= 00_pytorch_warmup
PARAMS ?=
PHASE ?= p00
# No MPLBACKEND here: exported, it would reach the Jupyter kernels of `make lab` and `make rerun`
# and turn every plot into text. Only the unit tests draw headless (Agg).

.PHONY: help setup test unit nbtest nbfull notebooks lint format tb lab rerun done bench gpu-check doctor runs reference clean

help:
	@echo "setup     create .venv with torch for this GPU, requirements, labkit, Jupyter kernel"
	@echo "test      unit tests + every notebook through nbval (smoke settings)"
	@echo "unit      unit tests only            nbtest  notebooks only"
	@echo "nbfull    every notebook's default Run all (papermill); fails on CLAIM FAILED; wall times"
	@echo "reference retrain labkit/reference/ (P10 detector, P20 U-Net + EMA, P20 judge; ~1 h CPU)"
	@echo "notebooks build notebooks/*.ipynb from the .py sources (git-ignored; outputs kept)"
	@echo "lint      ruff + black --check       format  black + import sorting"
	@echo "tb        TensorBoard over runs/     lab     jupyter lab"
	@echo "rerun     papermill rerun: make rerun NB=00_pytorch_warmup PARAMS='-p max_steps 3000'"
	@echo "done      phase checks: make done PHASE=p00"
	@echo "bench     one report of speed ratios (trainer, NMS, loaders, RL, DDIM, splatting) -> runs/bench/"
	@echo "gpu-check every GPU config for 50 steps on generated data: card, AMP, peak memory, step time -> runs/gpu_check/"
	@echo "doctor    is this machine ready? torch/GPU kernels, AMP, data, disk, threads"
	@echo "runs      index of the run folders under runs/ (python -m labkit.runs compare A B)"

setup:
	bash scripts/setup_venv.sh

test: unit nbtest

# Tests run single-threaded: their tiny models gain nothing from intra-op threads, and on a busy
# 2-core machine torch's thread hand-offs can make a step 10x slower.
unit: notebooks
	MPLBACKEND=Agg OMP_NUM_THREADS=1 $(PY) -m pytest -q tests

# The .py files are the source (and all git tracks); the .ipynb beside them are built from them.
# The kernel draws as in Jupyter (inline); tests/test_papermill.py checks that the plots are there.
nbtest: notebooks
	LABKIT_SMOKE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=300 notebooks/*.ipynb

# A learner's "Run all" of every notebook (no smoke flag, one thread, offline) into runs/notebooks/;
# fails on any output line starting "CLAIM FAILED" or with fewer than 6 checked claims. ONLY="20_diffusion_mini ...": some.
nbfull: notebooks
	OMP_NUM_THREADS=1 $(PY) scripts/nbfull.py $(ONLY)

# The reference checkpoints that ship in labkit/reference/ (default configs, CPU, one thread):
# trained in a temporary runs folder, stored as fp16, measured, described in provenance.json.
reference:
	OMP_NUM_THREADS=1 $(PY) scripts/make_reference.py

# The .ipynb are git-ignored: built from the .py, with the outputs a learner saved kept (--update).
# --set-kernel: every pair names the "Python (labkit)" kernel, so Jupyter opens it without asking.
notebooks:
	$(PY) -m jupytext --quiet --update --to ipynb --set-kernel labkit $(NOTEBOOKS)

lint:
	bash scripts/lint.sh

format:
	bash scripts/format.sh

tb:
	bash scripts/run_tensorboard.sh

lab: notebooks
	.venv/bin/jupyter lab notebooks

rerun: notebooks
	mkdir -p runs/notebooks
	$(PY) -m papermill -k labkit --language python notebooks/$(NB).ipynb runs/notebooks/$(NB)-$$(date +%Y%m%d-%H%M%S).ipynb $(PARAMS)

done:
	$(PY) -m labkit.done $(PHASE)

# One process, interleaved repeats, ratios only; a few minutes. JSON in runs/bench/<time>.json.
bench:
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.report

# Every GPU config through the CLI for a few steps (--steps, --only); ~5 min; exit 2 without CUDA.
gpu-check:
	$(PY) scripts/gpu_check.py

doctor:
	$(PY) -m labkit.doctor

runs:
	$(PY) -m labkit.runs

clean:
	rm -rf build .pytest_cache .ruff_cache
