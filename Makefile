# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch 2.13.0 is pinned: on Linux x86_64 a newer or unpinned torch pulls several GB of CUDA libraries.
TORCH ?= torch==2.13.0

.PHONY: install run test test-light lint default-model clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[torch,dev,gui]"
	touch $(STAMP)

install: $(STAMP)

# The companion on the embedded default model: the window when a display exists, else the headless
# companion (it says so): OSC on 127.0.0.1:9000, samples in the watched folder it prints. Ctrl-C stops it.
run: $(STAMP)
	$(PY) -m companion gui --or-serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .

LIGHT := .venv-light
# the light runtime: `pip install .` without torch (NumPy + ONNX Runtime) generates and serves
$(LIGHT)/.installed: pyproject.toml
	$(PYTHON) -m venv $(LIGHT)
	$(LIGHT)/bin/python -m pip install --quiet --upgrade pip
	$(LIGHT)/bin/python -m pip install --quiet .
	touch $(LIGHT)/.installed

test-light: $(LIGHT)/.installed
	.ci/light_runtime.sh $(LIGHT)

test: lint test-light
	$(PY) -m pytest

# Reproduce the shipped default model from scratch (fixed seed, built-in synthesizer; see
# models/default_recipe.py): three stages, each run trains for at most 85-105 minutes and running it again
# resumes (it says which stage it is in). The ONNX export follows each new packaged model.
DEFAULT_WEIGHTS := models/default/dd-default.safetensors
DEFAULT_ONNX := models/default/dd-default.onnx
default-model: $(STAMP)
	$(PY) -m companion train --recipe default
	@if [ $(DEFAULT_WEIGHTS) -nt $(DEFAULT_ONNX) ]; then \
		$(PY) -m companion export --model $(DEFAULT_WEIGHTS) --out $(DEFAULT_ONNX); fi

# ---- plugin (issue 20): the DAW instrument in plugin/ (C++17 on DPF; VST3, CLAP, LV2, JACK standalone) ----
# Needs: apt-get install -y --no-install-recommends dpf-source liblo-dev libsndfile1-dev libsoxr-dev
#        libjack-jackd2-dev (tests also: jalv lilv-utils jackd2). Bundles land in plugin/bin/.
# `make plugin-core-test` builds the real-time core's unit test with ASan + UBSan and runs it.
.PHONY: plugin plugin-core-test
plugin:
	$(MAKE) -C plugin -j2

plugin-core-test:
	$(MAKE) -C plugin core-test
# ---- end plugin ----

clean:
	rm -rf $(VENV) $(LIGHT) build dist *.egg-info .pytest_cache .ruff_cache plugin/bin plugin/build
