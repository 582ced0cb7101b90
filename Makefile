# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch 2.13.0 is pinned: on Linux x86_64 a newer or unpinned torch pulls several GB of CUDA libraries.
TORCH ?= torch==2.13.0

.PHONY: install system run test test-light lint app test-app default-model clean

# System packages first, before anything else (tools/system_deps.py): on Debian/Ubuntu it installs what is
# missing with apt-get (as root, or through password-less sudo) and says what; elsewhere it prints the exact
# command to run and stops. `make test` asks for the test set (a superset of the run set): target-specific
# variables pass down to prerequisites, so every target reached from `test` checks that set.
SYSTEM_SET ?= run
test: SYSTEM_SET = test
app test-app: SYSTEM_SET = test
system:
	@$(PYTHON) tools/system_deps.py $(SYSTEM_SET)

$(STAMP): pyproject.toml | system
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[torch,dev,gui]"
	touch $(STAMP)

install: $(STAMP)

# The companion on the embedded default model: the window when a display exists, else the headless
# companion (it says so): OSC on 127.0.0.1:9000, samples in the watched folder it prints. Ctrl-C stops it.
run: system $(STAMP)
	$(PY) -m companion gui --or-serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .

LIGHT := .venv-light
# the light runtime: `pip install .` without torch (NumPy + ONNX Runtime) generates and serves
$(LIGHT)/.installed: pyproject.toml | system
	$(PYTHON) -m venv $(LIGHT)
	$(LIGHT)/bin/python -m pip install --quiet --upgrade pip
	$(LIGHT)/bin/python -m pip install --quiet .
	touch $(LIGHT)/.installed

# from nothing every time: a clean virtual environment, `pip install .`, then generate and serve
test-light: system
	rm -rf $(LIGHT)
	$(MAKE) --no-print-directory $(LIGHT)/.installed
	.ci/light_runtime.sh $(LIGHT)

# The desktop app: a PyInstaller one-folder bundle (build.spec) of the light runtime (no torch) with the window,
# the default model's ONNX export, PortAudio and the OSC document inside. Built from its own environment so
# nothing the light runtime never imports can slip in; tests/test_app.py runs the built app, not the source.
APPENV := .venv-app
APP := dist/dd-companion/dd-companion
APP_SOURCES := $(shell find companion gui osc_protocol models export -name '*.py' 2>/dev/null) build.spec \
	$(wildcard models/default/*.onnx models/default/*.json) docs/OSC.md
$(APPENV)/.installed: pyproject.toml | system
	$(PYTHON) -m venv $(APPENV)
	$(APPENV)/bin/python -m pip install --quiet --upgrade pip
	$(APPENV)/bin/python -m pip install --quiet ".[gui,mdns]" "pyinstaller>=6.10"
	touch $(APPENV)/.installed

$(APP): $(APPENV)/.installed $(APP_SOURCES)
	$(APPENV)/bin/pyinstaller --noconfirm --clean --log-level ERROR --distpath dist --workpath build/app build.spec
	@du -sh dist/dd-companion | awk '{print "desktop app: dist/dd-companion, " $$1 " unpacked"}'

app: $(APP)

test-app: $(APP) $(STAMP)
	$(PY) -m pytest tests/test_app.py

# Everything: system packages, the linter, the light runtime from a clean `pip install .`, the desktop app,
# the plugin, then the whole suite (which runs the built app too). A skip is a failure unless its reason
# says it is optional (a GPU, a display server); see tests/conftest.py.
test: system lint test-light app plugin
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

# The DAW instrument in plugin/ (C++17 on DPF: VST3, CLAP, LV2, JACK standalone), bundles in plugin/bin/.
# Its build packages (dpf-source, liblo-dev, libsndfile1-dev, libsoxr-dev, libjack-jackd2-dev, g++) are in the
# test set of tools/system_deps.py; `make plugin` alone checks that set first.
# `make plugin-core-test` builds the real-time core's unit test with ASan + UBSan and runs it (the suite's
# tests/test_plugin_core.py does too).
.PHONY: plugin plugin-core-test
plugin plugin-core-test: SYSTEM_SET = test
plugin: system
	$(MAKE) -C plugin -j2

plugin-core-test: system
	$(MAKE) -C plugin core-test

clean:
	rm -rf $(VENV) $(LIGHT) $(APPENV) build dist *.egg-info .pytest_cache .ruff_cache plugin/bin plugin/build
