# lossbench -- every target installs .venv first when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
# the shared datasets folder beside the checkout (MNIST/raw, FashionMNIST/raw), used by tests
export LOSSBENCH_DATA ?= $(abspath ../shared/datasets)

.PHONY: install train test test-fast test-slurm lint format docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# compat: src/ goes on sys.path, so Hydra's plugin scan finds hydra_plugins/lossbench_slurm (the default
	# editable finder hides it from pkgutil and hydra/launcher=slurm fails with 'Unknown plugin class')
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

train: $(STAMP)  ## the main job: synthetic multilabel data, sigmoid + BCEWithLogits
	$(PY) -m lossbench.train $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile -q $(ARGS)

# the tests marked slurm on a throwaway local Slurm cluster (scripts/slurm_local.sh; as root it installs
# slurm-wlm and munge when missing), stopped again whatever the tests' outcome
SLURM_DIR ?= /tmp/lossbench-slurm-cluster
test-slurm: $(STAMP)
	scripts/slurm_local.sh start $(SLURM_DIR) || { scripts/slurm_local.sh stop $(SLURM_DIR); exit 1; }
	SLURM_CONF=$(SLURM_DIR)/etc/slurm.conf $(PY) -m pytest -q -m slurm $(ARGS); \
	  status=$$?; scripts/slurm_local.sh stop $(SLURM_DIR); exit $$status

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests scripts

format: $(STAMP)
	$(VENV)/bin/ruff format src tests scripts

docs: $(STAMP)  ## the documentation site -> site/ (strict: a broken link or reference fails the build)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

clean:
	rm -rf runs outputs multirun .pytest_cache site

# the newest sweep unless SWEEP=<dir> is given (several: SWEEP="a b" ARGS="--out DIR")
SWEEP ?= $(lastword $(sort $(wildcard runs/multirun/*)))
.PHONY: report
report: $(STAMP)  ## mean ± std table and plots of a sweep (lossbench/report.py)
	@test -n "$(SWEEP)" || { echo "error: no runs/multirun/<time> yet; run a sweep first or pass SWEEP=DIR" >&2; exit 2; }
	$(PY) -m lossbench.report $(SWEEP) $(ARGS)

.PHONY: stability
stability: $(STAMP)  ## where each loss and its gradient turn inf/NaN in float32/16/bf16 -> reports/stability/
	$(PY) -m lossbench.stability $(ARGS)

.PHONY: bench
bench: $(STAMP)  ## performance on this machine (CPU, or the GPU when there is one) -> docs/benchmarks.md
	$(PY) -m lossbench.bench $(ARGS)

.PHONY: reproduce reproduce-multilabel reproduce-converged reproduce-converged-multilabel reproduce-noise
# PROFILE=cpu: each claim sized for 2 CPU cores (about 20 min each) -> reports/reproduce_<claim>_cpu/ (default: the full protocol)
reproduce: $(STAMP)  ## claim 1 at small budgets: CE vs BCE, 10,000 images, 5 epochs, 10 seeds -> reports/reproduce_mnist/
	$(PY) scripts/reproduce.py mnist $(if $(PROFILE),--profile $(PROFILE)) $(ARGS)

.PHONY: reanalyse
reanalyse: $(STAMP)  ## recompute every committed reports/reproduce_*/ from its results.json with the current statistics (no training)
	for d in reports/reproduce_*/; do $(PY) scripts/reproduce.py --reanalyse $$d || exit 1; done

reproduce-multilabel: $(STAMP)  ## claim 2 at small budgets: multi-label losses x Adam/Adadelta, 6 seeds -> reports/reproduce_multilabel/
	$(PY) scripts/reproduce.py multilabel $(if $(PROFILE),--profile $(PROFILE)) $(ARGS)

# the claims at the forum's regime: full data, converged models, equal tuning budgets, seeds as members
# (PROFILE=cpu, 2 quiet CPU cores: claim 1's MLP part 52 to 68 min, claim 2 74 min) -> reports/reproduce_<claim>_converged[_cpu]/
reproduce-converged: $(STAMP)  ## claim 1 at the forum's regime (full MNIST / Fashion-MNIST, to a plateau, 20 seeds)
	$(PY) scripts/reproduce.py mnist_converged $(if $(PROFILE),--profile $(PROFILE)) $(ARGS)

reproduce-converged-multilabel: $(STAMP)  ## claim 2 at full size (55,000 mnist_multi canvases, to a plateau, 12 seeds)
	$(PY) scripts/reproduce.py multilabel_converged $(if $(PROFILE),--profile $(PROFILE)) $(ARGS)


# claim 3 (docs/noise.md): robust losses under label noise, missing tags and sigmoid + BCE; PROFILE=cpu: 2,000
# training samples, 8 epochs, 83 min on 2 loaded CPU cores -> reports/reproduce_noise_cpu/ (default: full data, GPU)
reproduce-noise: $(STAMP)  ## claim 3: CE vs GCE/SCE/NCE+RCE/MAE under symmetric / pair-flip noise; BCE vs WAN/Hill/ASL/focal with missing tags, 12 seeds
	$(PY) scripts/reproduce.py noise $(if $(PROFILE),--profile $(PROFILE)) $(ARGS)
