# sb3-safe: two commands on a fresh machine, `make demo` and `make test` (each installs first).
#
# `make install` creates .venv if missing and installs, in this order: torch==2.13.0 (the CPU build; never
# let pip pick a newer torch), the pinned stack (requirements/), safety-gymnasium 1.0.0 and bullet-safety-gym
# 1.4.0 with --no-deps (their own pins conflict with the stack; the first needs its plugin's shim, the second
# runs as is), then sb3-safe and every plugin under plugins/ in editable mode. A stamp file makes the second
# run a no-op until an input changes.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH_VERSION := 2.13.0
PLUGINS := $(wildcard plugins/*/pyproject.toml)
STAMP := $(VENV)/.install-stamp
INSTALL_INPUTS := pyproject.toml requirements/stack.txt requirements/constraints.txt $(PLUGINS)

.PHONY: install demo test test-slow lint format bench clean

install: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "sb3-safe needs Python >= 3.11"'
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -c requirements/constraints.txt -r requirements/stack.txt
	$(PIP) install -q --no-deps safety-gymnasium==1.0.0 bullet-safety-gym==1.4.0
	$(PIP) install -q -c requirements/constraints.txt -e ".[dev,ray]" $(foreach p,$(PLUGINS),-e $(dir $(p)))
	@touch $(STAMP)

# The main job: CVPO on a safety-gymnasium task through the CLI, for a short budget. It prints the evaluation
# table, writes the learning-curve PNG and says where the run directory and its offline W&B run are.
demo: install
	$(VENV)/bin/sb3-safe train --algo cvpo --env SafetyPointGoal1-v0 --n-timesteps 10000 --n-envs 4 \
		--eval-freq 5000 --eval-episodes 2 --hyperparams learning_starts=1000 --env-kwargs fast_reset=true

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy sb3_safe $(dir $(wildcard plugins/*/sb3_safe_*/__init__.py))

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: install lint
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

bench: install
	$(PY) benchmarks/env_fast_reset.py --steps 5000
	$(PY) benchmarks/estep_dual.py --quick
	$(PY) benchmarks/cvpo_throughput.py --quick
	$(PY) benchmarks/linear_mdp.py --quick
	$(PY) benchmarks/figure1_speed.py --episodes 100
	$(PY) benchmarks/socp_solver.py --quick
	$(PY) benchmarks/compare_safe.py --timesteps 2500 --seeds 0 --n-envs 2 --out runs/compare_safe_quick
	$(PY) benchmarks/cvpo_bullet.py --timesteps 3000 --seeds 1 --n-envs 2

clean:
	rm -rf $(VENV) *.egg-info plugins/*/*.egg-info .pytest_cache .ruff_cache .mypy_cache
