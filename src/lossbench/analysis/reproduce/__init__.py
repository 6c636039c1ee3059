"""Reproduce the forum's claims: seed-paired runs, corrected statistics, a report.

``lossbench-reproduce mnist`` (claim 1: CE vs BCE on MNIST / Fashion-MNIST; also ``python
scripts/reproduce.py`` and ``make reproduce``), ``lossbench-reproduce multilabel`` (claim 2) and
``lossbench-reproduce noise`` (claim 3: robust losses under label noise, ``make reproduce-noise``). The protocol
lives in ``configs/experiment/reproduce_<name>.yaml`` under ``reproduce:`` (``.protocol``); the rest of
that file is an ordinary Hydra experiment that every run is composed with. ``--profile cpu`` and
``--profile quick`` replace some of its keys: runs sized for a 2-core CPU (20 to 85 minutes per claim) and for
smoke tests (seconds). A protocol's ``settings:`` (named training overrides, e.g. ``noise=symmetric
noise.rate=0.4``) are crossed with its datasets and models; each (dataset, model, setting) block goes through
the steps on its own. Steps:

1. **tune** (``.tuning``) -- each strategy whose ``lr`` is ``tuned`` trains once per rate of its
   optimizer's grid with ``tune_seed``; the best final ``select_by`` value on the validation split wins;
2. **seeds** (``.jobs``) -- every strategy trains once per seed at its rate; a seed fixes initial weights
   and batch order, so strategies are paired by seed;
3. **statistics** (``.results``, ``lossbench.analysis.stats``) -- paired tests on integer counts where
   the metric is one, Holm over every comparison of the claim, verdicts that need both tests, detectable
   differences, Friedman ranks across settings;
4. **report** (``.report``) -- Markdown, CSV, JSON and PNG plots.

Each run is an ordinary run directory with ``summary.json`` under ``--runs``; a run whose summary exists is
not trained again, so a killed reproduction continues where it stopped; SIGINT, SIGTERM and SIGHUP stop its
workers and remove the unfinished runs first (``.interrupt``). ``--reanalyse REPORT_DIR``
recomputes a committed report's statistics from its ``results.json`` without training.
"""

from lossbench.analysis.reproduce.cli import main, reanalyse, reproduce

__all__ = ["main", "reanalyse", "reproduce"]
