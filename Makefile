# Two commands do all the set-up:
#   make lab    create .venv, install the course, build the tiny world, start JupyterLab
#   make test   the same set-up, then the unit tests and every notebook on the tiny profile
# and `make run` executes every notebook into build/ and prints a table of times and results;
# `make lint` checks style (ruff) and that notebooks are committed without outputs; `make guide`
# regenerates docs/instructor_guide.md from `make run`'s timings; `make bench` benchmarks throughput;
# `make e2e` runs notebooks 00 and 01 in JupyterLab in a real (headless) browser; `make colab-check`
# runs each notebook's first cells outside the repository, in a fresh venv, as on Colab; `make test-min`
# runs the unit tests and some notebooks with the lowest library versions pyproject.toml allows; `make robustness` rebuilds
# the tiny world as other machines would and reruns every lesson's checks; `make rehearse` runs lessons on the
# colab and full profiles' code path on this CPU, with stand-ins of the hub models and hub-shaped data.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.course-installed
# Tests and CI never touch a model hub.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

TINY_PARTS := data tokenizer tiny-base tiny-chat tiny-vlm tiny-teacher
# llama-cpp-python (notebook 10) compiles llama.cpp: for any x86/ARM CPU (not only this one's
# instruction set, so a cached build moves between machines), without the multimodal library.
SHIP_BUILD := CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"

.PHONY: install tiny tiny-from-scratch lab test lint run guide budget bench e2e colab-check test-min robustness rehearse launches cluster-check publish clean

install: $(STAMP)

# torch first: with no GPU, the CPU build (torch==2.13.0) instead of a multi-GB CUDA one; a torch
# already in the environment (Colab's, say) is kept.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || { \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install --quiet torch; \
	  else $(PY) -m pip install --quiet torch==2.13.0; fi; }
	$(SHIP_BUILD) $(PY) -m pip install --quiet -e ".[dev,ship]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# The whole tiny world: data generated here, the models copied from data/tiny-world/ (seconds); and
# llama.cpp's converters for notebook 10, from the llama-cpp-python source package (once).
tiny: install
	$(OFFLINE) $(PY) -m helpers.tiny build --only $(TINY_PARTS)
	$(PY) -m helpers.shipping

# Every model retrained here, as the prebuilt ones were (26 minutes measured on a 2-core Xeon, one thread; more on slower CPUs).
tiny-from-scratch: install
	$(OFFLINE) $(PY) -m helpers.tiny build --from-scratch --force --only $(TINY_PARTS)

# As root (a container), JupyterLab refuses to start without --allow-root.
lab: tiny
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

# Unit tests and notebooks run in two lanes at once on 2 cores (scripts/run_tests.py says why and in
# which order); LANES=1 runs them one after another.
LANES ?= 2
TEST_ARGS ?=
test: tiny
	$(OFFLINE) COURSE_PROFILE=tiny $(PY) scripts/run_tests.py --lanes $(LANES) $(TEST_ARGS)

LINTED := helpers tests scripts notebooks
lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(PY) scripts/check_notebooks.py
	$(PY) scripts/publish.py --check

run: tiny
	$(OFFLINE) $(PY) scripts/run_notebooks.py notebooks build

# Every lesson's GPU runs, estimated (minutes, peak memory, fit on a T4 / an A100); the GPU columns
# of README and of the instructor's guide rewritten from the estimates.
budget: install
	$(PY) -m helpers.budget --write
	$(PY) scripts/instructor_guide.py --estimates

# docs/instructor_guide.md from the timings `make run` just measured.
guide: run
	$(PY) scripts/instructor_guide.py build/timings.json docs/instructor_guide.md

# Four perturbed tiny worlds (other seeds, other CPU kernels), each built from scratch, every lesson
# rerun in each; prints every asserted effect's margin in every world. A world takes as long as
# `make tiny-from-scratch` plus `make run`: about 20 minutes to 2 hours on 2 cores, by machine.
robustness: install
	$(PY) scripts/robustness.py $(ARGS)

# From one machine to a cluster, for real on this one: scripts/train_distributed.py as two nodes
# (c10d rendezvous on localhost), scripts/slurm/train.sbatch on a one-host SLURM cluster started
# here (`apt-get install slurm-wlm munge`), LLaMA-Factory's CLI in .venv-llamafactory on the tiny model.
cluster-check: tiny
	$(OFFLINE) $(PY) scripts/cluster_check.py $(ARGS)

# Notebook 06's launches, 20 of each strategy on two CPU processes: how often one fails, and why.
launches: tiny
	$(OFFLINE) $(PY) scripts/launch_loop.py $(ARGS)

# Notebook 07's throughput benchmark, to compare machines.
bench: tiny
	$(OFFLINE) $(PY) scripts/bench_throughput.py

# Notebooks 00 and 01 run in JupyterLab in headless Chromium (Debian's `chromium` package).
e2e: tiny
	$(OFFLINE) $(PY) scripts/e2e_browser.py

# Each notebook copied alone into an empty folder runs its Colab set-up cell in a fresh venv.
colab-check: tiny
	$(PY) scripts/check_colab_ready.py

# The unit tests (which drive TRL's SFT and DPO trainers, PEFT, bitsandbytes, accelerate and
# distillation on the tiny models), notebooks 00 and 01 and the exercises' solutions that train
# with TRL or PEFT (02-05, 09), with the lowest library versions pyproject.toml allows, in a
# separate venv: an API change shows up here before a learner with an older Colab hits it. (Every
# lesson again would double CI's time; the other solutions call no trainer.)
MIN_VENV ?= .venv-min
MIN_SOLUTIONS := $(foreach n,02_lora_sft 03_vlm_chartqa 04_dpo 05_distillation 09_rl_grpo,notebooks/solutions/$(n)_solutions.ipynb)
test-min: tiny
	test -x $(MIN_VENV)/bin/python || python3 -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/python -c "import torch" 2>/dev/null || $(MIN_VENV)/bin/python -m pip install --quiet torch==2.13.0
	mkdir -p build && $(PY) scripts/min_versions.py > build/min-constraints.txt
	$(SHIP_BUILD) $(MIN_VENV)/bin/python -m pip install --quiet -e ".[dev,ship]" -c build/min-constraints.txt
	$(MIN_VENV)/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(MIN_VENV)/bin/python -m pip list 2>/dev/null | grep -iE "^(torch|transformers|trl|peft|accelerate|datasets|bitsandbytes) "
	$(OFFLINE) COURSE_PROFILE=tiny COURSE_CACHE=$(CURDIR)/.course_cache $(PY) scripts/run_tests.py --lanes $(LANES) \
	  --python $(MIN_VENV)/bin/python tests notebooks/00_setup.ipynb notebooks/01_token_lengths.ipynb $(MIN_SOLUTIONS)

# The GPU profiles' code path on this CPU: stand-ins of the hub models (published configs, random
# weights, two layers) and hub-shaped fixtures, built once; see helpers/rehearsal.py.
rehearse: install
	$(OFFLINE) $(PY) scripts/rehearse.py $(ARGS)

# Point every Open-in-Colab badge and Colab set-up cell at your copy: make publish REPO=owner/name
publish:
	python3 scripts/publish.py $(REPO) $(if $(BRANCH),--branch $(BRANCH))

clean:
	rm -rf build .course_cache
