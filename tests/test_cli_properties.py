"""Property (Hypothesis): any mix of valid and invalid command-line values for the documented keys ends
either in a run (exit code 0, a ``summary.json``) or in exactly one line ``error: ...`` on stderr with exit
code 2 -- never a traceback.

The examples go in process through the CLI's own entry point (``lossbench.train.main`` with ``sys.argv``
set: Hydra, validation, resume, the real Trainer on tiny settings): first each documented invalid value
alone (explicit examples: a value that validation lets through shows as the crash it causes), then
generated mixes of valid values, one invalid value or junk text; a few fixed mixes go through
``python -m lossbench.train`` as a user runs it. The 30 examples are derandomised (the
same ones each run); ``LOSSBENCH_HYPOTHESIS_RANDOM=1`` draws new ones, ``LOSSBENCH_HYPOTHESIS_EXAMPLES=N``
draws N.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from lossbench import losses
from lossbench import train as train_module

from conftest import run_cli

# (valid values, invalid values) per documented key; configs/*/ and README "What exists" list them
GROUPS = {
    "data": (["synthetic"], ["imagenet", "mnist", "coco", "Synthetic", "0"]),  # mnist/coco: data.root below is missing
    "head": (["sigmoid", "softmax", "partition"], ["tanh"]),
    "loss": (losses.available(), ["mse", "bce", "[bce_with_logits]"]),
    "model": (["mlp"], ["cnn", "resnet"]),  # cnn needs images: an error on synthetic data
    "optimizer": (["adam", "adamw", "sgd", "rmsprop", "adadelta", "adagrad"], ["lbfgs"]),
    "trainer": (["default", "cpu"], ["gpu", "tpu"]),
    "logger": (["csv"], ["tensorboard"]),
}
KEYS = {
    "seed": (["0", "3"], ["-1", "1.5", "x", "null"]),
    "optimizer.lr": (["0.001", "0.05", "1e308"], ["0", "-1", "fast", "nan"]),
    "optimizer.weight_decay": (["0", "0.01"], ["-0.1", "x"]),
    "optimizer.momentum": (["0.5"], ["1.5", "-1"]),
    "data.batch_size": (["16", "64", "100000"], ["0", "-4", "2.5", "big"]),
    "data.train_size": (["256", "300"], ["0", "-1", "many"]),
    "data.val_size": (["64"], ["0", "-3"]),
    "data.test_size": (["64", "null"], ["0"]),
    "data.num_classes": (["2", "5"], ["1", "0", "ten"]),
    "data.multilabel": (["true", "false"], ["maybe", "2"]),
    "data.num_features": (["8", "32"], ["0", "x"]),
    "data.cardinality": (["1.5", "3"], ["0", "11", "x"]),
    "data.noise": (["0", "1.5"], ["-1", "x"]),
    "data.imbalance": (["0", "2"], ["-0.5", "x"]),
    "trainer.max_epochs": (["1"], ["0", "-1", "many"]),
    "trainer.precision": (["32-true", "64-true"], ["13", "half"]),
    "trainer.accelerator": (["cpu", "auto"], ["gpu", "quantum"]),
    "trainer.devices": (["1", "auto"], ["0", "-1", "x"]),
    "trainer.gradient_clip_val": (["1.0", "null"], ["-1", "x"]),
    "trainer.divergence_check_every": (["null", "1"], ["0", "-5", "x"]),
    "head.threshold": (["0.3"], ["0", "1", "1.5", "half"]),
    "head.z_activation": (["clip", "softplus"], ["relu"]),
    "loss.label_smoothing": (["0", "0.1"], ["1.0", "-0.1"]),
    "loss.reduction": (["mean", "sum"], ["avg", "none"]),
    "model.hidden": (["[32]", "[16,16]"], ["[]", "[0]", "[-3]", "x"]),
    "model.dropout": (["0", "0.2"], ["1.5", "-0.1"]),
    "decision.headline": (["null", "fixed", "per_class", "global", "top_k", "count"], ["best"]),
    "decision.top_k": (["null", "1", "3"], ["0", "-2", "100"]),
    "seeds": (["null", "[0,1]"], ["[]", "[1,1]", "[-1]", "[a]"]),
    "losses": (["null", "[bce_with_logits,bce_manual]"], ["[mse]", "[bce_with_logits,bce_with_logits]"]),
    "resume": (["auto", "false"], ["true", "0.5", "/nowhere/run"]),
}
# text no key expects: Hydra's grammar, interpolations, quotes, spaces
JUNK = st.text(alphabet=st.sampled_from(list("az09.-_,[]{}()$:=' \"\\/*?~+%")), max_size=8)
# everything else small: the valid runs take seconds
BASE = {"trainer.progress_bar": "none", "trainer.max_epochs": "1", "trainer.limit_train_batches": "3",
        "trainer.limit_val_batches": "1", "trainer.limit_test_batches": "1", "data.train_size": "256",
        "data.val_size": "64", "data.test_size": "64", "data.batch_size": "64", "data.root": "/nowhere/data"}


def pick(table: dict):
    """A (key, value) pair: a valid value 8 times in 10, an invalid one or junk text once each."""
    def value(key: str):
        valid, invalid = table[key]
        return st.integers(0, 9).flatmap(lambda r: st.sampled_from(valid) if r < 8 else
                                         st.sampled_from(invalid) if r == 8 else JUNK)
    return st.sampled_from(sorted(table)).flatmap(lambda key: st.tuples(st.just(key), value(key)))


# one probe per example: a documented invalid value (or junk) for one key, the rest mostly valid, so that an
# invalid value validation lets through shows as the crash it causes
PROBES = [(key, value) for table in (GROUPS, KEYS) for key, (_, invalid) in sorted(table.items()) for value in invalid]
PROBE = st.integers(0, 9).flatmap(lambda r: st.sampled_from(PROBES).map(lambda kv: [kv]) if r < 4 else
                                  st.tuples(st.sampled_from(sorted({**GROUPS, **KEYS})), JUNK).map(lambda kv: [kv])
                                  if r < 5 else st.just([]))
OVERRIDES = st.tuples(st.lists(pick(GROUPS), max_size=2, unique_by=lambda kv: kv[0]),
                      st.lists(pick(KEYS), max_size=3, unique_by=lambda kv: kv[0]), PROBE)


@contextlib.contextmanager
def working_directory(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def cli_in_process(args: list[str], workdir: Path) -> tuple[int, str]:
    """``lossbench-train ARGS`` in this process: (exit code, stderr)."""
    err, out = io.StringIO(), io.StringIO()
    code = 0
    with mock.patch.object(sys, "argv", ["lossbench-train", *args]), working_directory(workdir), \
            contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            train_module.main()
        except SystemExit as stop:
            code = stop.code
    return code, err.getvalue()


def check_outcome(code: int, stderr: str, root: Path, args: list[str]) -> None:
    assert "Traceback" not in stderr and "Error executing job" not in stderr, (args, stderr[-3000:])
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    if code == 0:
        assert errors == [], (args, errors)
        summaries = [json.loads(p.read_text()) for p in root.rglob("summary.json")]
        assert summaries and all(s["status"] in ("completed", "diverged") for s in summaries), (args, summaries)
    else:
        assert code == 2, (args, code, stderr[-3000:])
        assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], (args, stderr[-3000:])
        assert not list(root.rglob("summary.json")), args


def each_probe_alone(test):
    """Explicit examples, run before the generated ones every time: each documented invalid value alone."""
    for probe in reversed(PROBES):
        test = example(overrides=([], [], [probe]))(test)
    return test


@pytest.mark.slow
@each_probe_alone
@settings(max_examples=int(os.environ.get("LOSSBENCH_HYPOTHESIS_EXAMPLES", "30")), deadline=None, database=None, print_blob=True,
          derandomize=not os.environ.get("LOSSBENCH_HYPOTHESIS_RANDOM"),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(overrides=OVERRIDES)
def test_any_mix_of_overrides_runs_or_ends_in_one_error_line(overrides, tmp_path_factory, monkeypatch):
    groups, keys, probe = overrides
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    groups = list({**dict(groups), **{k: v for k, v in probe if k in GROUPS}}.items())
    chosen = {**dict(keys), **{k: v for k, v in probe if k not in GROUPS}}
    workdir = tmp_path_factory.mktemp("cli")
    root = workdir / "runs"
    args = [f"{k}={v}" for k, v in groups] + [f"{k}={v}" for k, v in {**BASE, **chosen}.items()
                                               if k != "data.root" or dict(groups).get("data") in ("mnist", "coco")]
    args.append(f"output_root={root}")
    code, stderr = cli_in_process(args, workdir)
    event("a run" if code == 0 else f"exit {code}")  # pytest --hypothesis-show-statistics shows the mix
    check_outcome(code, stderr, root, args)


# a few mixes as a user types them, through the real command
COMMANDS = [
    ["loss=cross_entropy", "head=sigmoid", "optimizer.lr=-1"],  # two errors: the first found is reported
    ["seed=1.5", "data.batch_size=big", "model=resnet"],
    ["data.batch_size=16", "optimizer=sgd", "optimizer.momentum=0.5", "head.threshold=0.3", "seed=3"],  # a run
]


@pytest.mark.slow
@pytest.mark.parametrize("args", COMMANDS, ids=["two-errors", "three-errors", "valid"])
def test_the_command_runs_or_prints_one_error_line(args, tmp_path):
    root = tmp_path / "runs"
    base = [f"{k}={v}" for k, v in BASE.items() if k != "data.root" and k.split("=")[0] not in
            {a.split("=")[0] for a in args}]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    result = run_cli([*args, *base, f"output_root={root}"], cwd=tmp_path, env=env)
    check_outcome(result.returncode, result.stderr, root, args)
