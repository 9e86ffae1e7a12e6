# Quick start: `make run` (set up, then measure the embedded default dataset) and `make test` (about 4 minutes on
# 2 cores; the slow variants: `make test-slow`). `make notebooks` opens the executed notebooks in Jupyter.
# TORCH pins the CPU wheel CI uses; on a GPU machine run `make run TORCH=torch` for a CUDA build.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN = $(VENV)/bin

.PHONY: run test test-slow lint setup clean experiments figures notebooks

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]" --config-settings editable_mode=compat
	touch $@

setup: $(BIN)/.installed

run: setup
	$(BIN)/python -m symmetry.measure

test: setup  # the default suite (slow variants deselected in pyproject.toml)
	$(BIN)/python -m pytest -q

test-slow: setup  # only the tests marked slow (long variants of the default ones)
	$(BIN)/python -m pytest -q -m slow

$(BIN)/.notebooks: $(BIN)/.installed
	$(BIN)/pip install --quiet -e ".[notebooks]" --config-settings editable_mode=compat
	touch $@

# Jupyter Lab on the executed notebooks (Ctrl-C stops it); e.g. JUPYTER_ARGS=--no-browser on a remote machine.
# Jupyter refuses to run as root unless told: a root shell (a container) gets --allow-root.
notebooks: $(BIN)/.notebooks
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root) $(JUPYTER_ARGS)

experiments: setup  # every experiment at the quick scale (resumes; stored cells are not recomputed)
	$(BIN)/python -m experiments.run all --quick

figures: setup  # every figure from the stored results
	$(BIN)/python -m experiments.figures

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache runs
