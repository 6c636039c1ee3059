"""Claim 3's reproduction (``lossbench-reproduce noise``): the settings dimension (one block of tuning, seeds
and comparisons per dataset x model x noise setting), the protocol's requirements, and the quick profile end
to end on real MNIST / mnist_multi runs."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lossbench.analysis.reproduce import protocol as protocol_module
from lossbench.analysis.reproduce import reproduce
from lossbench.analysis.reproduce.jobs import Job, job_overrides, member_groups
from lossbench.analysis.reproduce.protocol import load_protocol
from lossbench.analysis.reproduce.report import noise_rate_plot
from lossbench.analysis.reproduce.tuning import seed_jobs, tuning_jobs
from lossbench.errors import ConfigError
from lossbench.paths import CONFIG_DIR
from lossbench.summary import read_summary
from test_reproduce import check_verdicts_follow_from_p_values

SINGLE = {"none": [None], "symmetric": [0.2, 0.4], "pairflip": [0.2, 0.4]}
MULTI = {"none": [None], "missing": [0.3, 0.6], "single_positive": [None]}


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _noise_of(cfg) -> tuple[str, float | None]:
    return cfg.noise.name, cfg.noise.get("rate")


@pytest.mark.parametrize("profile", ["full", "cpu"])
def test_noise_protocol_has_the_issues_rates_kinds_losses_seeds_and_equal_budgets(profile):
    protocol = load_protocol("noise", profile=profile)
    assert set(protocol.datasets) == {"mnist", "fashion_mnist", "mnist_multi"} and set(protocol.models) == {"mlp"}
    assert len(protocol.seeds) >= 10 and protocol.tune_seed not in protocol.seeds
    single = {"cross_entropy", "gce", "sce", "nce_rce", "mae"}
    multi = {"bce_with_logits", "wan", "hill", "asymmetric", "focal"}
    jobs = seed_jobs(protocol, {})
    for dataset, kinds, losses in (("mnist", SINGLE, single), ("fashion_mnist", SINGLE, single),
                                   ("mnist_multi", MULTI, multi)):
        assert {s.loss for s in protocol.strategies_for(dataset)} == losses, dataset
        seen: dict[str, list] = {}
        for setting in protocol.settings_for(dataset):
            # the composed run config of every loss of the block: the setting's noise, one noise seed
            configs = [_compose(job_overrides(protocol, j, "cpu", None)) for j in jobs
                       if (j.dataset, j.setting, j.seed) == (dataset, setting, protocol.seeds[0])]
            assert {c.loss.name for c in configs} == losses
            assert len({(_noise_of(c), c.noise.get("seed")) for c in configs}) == 1, (dataset, setting)
            name, rate = _noise_of(configs[0])
            seen.setdefault(name, []).append(rate)
            assert protocol.settings[setting].kind == name
            assert protocol.settings[setting].rate == (rate if rate is not None else
                                                       (0.0 if name == "none" else None))
            cfg = configs[0]
            # full: all training data (55,000 images or canvases), 20 epochs; cpu: the sized subset, 8 epochs
            want = (2000, 2000, 5000, 8) if profile == "cpu" else (
                (55000, 5000, 10000, 20) if dataset == "mnist_multi" else (None, 5000, None, 20))
            assert (cfg.data.train_size, cfg.data.val_size, cfg.data.test_size, cfg.trainer.max_epochs) == want
            assert cfg.trainer.deterministic
        assert {k: sorted(v, key=lambda x: x or 0) for k, v in seen.items()} == kinds, dataset
    # equal budgets: every loss of every block tuned over the same trials of the one optimizer
    tuning = tuning_jobs(protocol)
    assert {s.optimizer for s in protocol.strategies.values()} == {"adam"}
    assert all(s.lr == "tuned" for s in protocol.strategies.values())
    assert len(tuning) == len(jobs) // len(protocol.seeds)  # one tuning block per (dataset, setting, loss)
    trials = protocol.lr_grid["adam"]
    assert len(trials) >= 6 and {tuple(j.lr for j in js) for js in tuning.values()} == {tuple(trials)}
    # the family: robust loss vs CE in each noisy setting (4 x 4 x 2) + BCE's drop vs each other loss (4 x 3)
    made = [(d, s, c["a"], c["b"]) for d, _, s in protocol.blocks() for c in protocol.comparisons_for(d, s)]
    assert len(made) == len(set(made)) == 44
    assert not [m for m in made if m[1] == "clean"]
    assert {m[2:] for m in made if m[0] == "mnist_multi"} == {("bce", b) for b in ("wan", "hill", "asl", "focal")}
    assert 2 / 2 ** len(protocol.seeds) < 0.05 / len(made)  # the exact Wilcoxon test can pass Holm


def test_settings_are_blocks_of_their_own_and_protocols_without_them_keep_their_jobs():
    protocol = load_protocol("noise", profile="quick")
    assert protocol.blocks() == [("mnist", "mlp", "clean"), ("mnist", "mlp", "symmetric_40"),
                                 ("mnist_multi", "mlp", "clean"), ("mnist_multi", "mlp", "missing_60")]
    jobs = seed_jobs(protocol, {})
    # members group the seeds of one (dataset, model, setting, strategy, rate) only
    groups = member_groups(jobs)
    assert len(groups) == 8 and all(len({(j.setting, j.strategy.name) for j in g}) == 1 for g in groups)
    job = next(j for j in jobs if j.setting == "symmetric_40" and j.strategy.name == "gce")
    assert job.key == f"mnist/mlp/symmetric_40/gce-adam-lr{job.lr:g}-seed0"
    overrides = job_overrides(protocol, job, "cpu", None)
    assert "noise=symmetric" in overrides and "noise.rate=0.4" in overrides
    # the drop comparison is made in the noisy block, not in its own reference
    assert [c["label"] for c in protocol.comparisons_for("mnist_multi", "clean")] == []
    assert [c.get("drop_from") for c in protocol.comparisons_for("mnist_multi", "missing_60")] == ["clean"]
    # a protocol without settings: one unnamed setting, the job keys and overrides it always had
    claim1 = load_protocol("mnist_converged", profile="quick")
    assert claim1.blocks() == [("mnist", "mlp", "")]
    old = next(j for j in seed_jobs(claim1, {}) if j.strategy.name == "ce_tuned")
    assert old.key == f"mnist/mlp/cross_entropy-adam-lr{old.lr:g}-seed0"
    assert not [o for o in job_overrides(claim1, old, "cpu", None) if o.startswith("noise")]
    assert Job("mnist", "mlp", old.strategy, 0.001, 3).key == "mnist/mlp/cross_entropy-adam-lr0.001-seed3"


def test_a_comparison_naming_an_unknown_setting_is_a_one_line_error(tmp_path, monkeypatch):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "reproduce_noise.yaml").write_text(textwrap.dedent("""
        reproduce:
          title: t
          datasets: {mnist: []}
          models: {mlp: []}
          seeds: [0, 1]
          tune_seed: 9
          select_by: val/acc
          lr_grid: {adam: [0.001]}
          settings: {clean: {label: clean, overrides: [noise=none]}}
          strategies:
            ce: {label: CE, overrides: [loss=cross_entropy], optimizer: adam, lr: 0.001}
            gce: {label: GCE, overrides: [loss=gce], optimizer: adam, lr: 0.001}
          table_metrics: [test/acc]
          comparisons:
            - {a: gce, b: ce, metric: test/acc, claim: greater, settings: [symmetric_40], label: "GCE beats CE"}
        """))
    monkeypatch.setattr(protocol_module, "CONFIG_DIR", tmp_path)
    with pytest.raises(ConfigError) as err:
        load_protocol("noise")
    assert str(err.value) == ("comparison 'GCE beats CE': setting 'symmetric_40' is not one of the protocol's "
                              "settings; available: clean")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_quick_noise_reproduction_tunes_trains_and_compares_each_setting(mnist_root, tmp_path):
    out, runs = tmp_path / "report", tmp_path / "runs"
    result = reproduce("noise", out, runs, device="cpu", n_jobs=1, profile="quick", data_root=str(mnist_root))
    protocol = load_protocol("noise", profile="quick")
    # each (dataset, setting, loss) block tuned on its own, over the same 2 trials
    assert sorted((k[0], k[2], k[3][0]) for k in result["chosen"]) == sorted(
        (d, s, st.overrides) for d, _, s in protocol.blocks() for st in protocol.strategies_for(d))
    assert {tuple(sorted(c["scores"])) for c in result["chosen"].values()} == {tuple(protocol.lr_grid["adam"])}

    results = json.loads((out / "results.json").read_text())
    check_verdicts_follow_from_p_values(results)
    done = [c for c in results["comparisons"] if "verdict" in c]
    assert {(c["dataset"], c["setting"], c["a"], c["b"]) for c in done} == {
        ("mnist", "symmetric_40", "gce", "ce"), ("mnist_multi", "missing_60", "bce", "wan")}
    assert done[0]["family"].startswith("Holm over the 2 comparisons of claim 3")
    assert {t["setting"] for t in results["tuning"]} == {"clean", "symmetric_40", "missing_60"}

    rows = _rows(out / "runs.csv")
    assert len(rows) == 8 * 2 and all(r["status"] == "completed" for r in rows)
    settings = protocol.settings
    labels: dict[tuple, set] = {}
    for row in rows:  # each run's summary: the noise its setting asked for, recorded in its row too
        noise = read_summary(runs / row["run"] / "summary.json")["noise"]
        want = settings[row["setting"]]
        assert noise["name"] == want.kind == row["noise"]
        assert noise.get("rate") == (want.rate if want.kind != "none" else None)
        assert float(row["noise_realised_rate"]) == noise["realised_rate"]
        if want.kind != "none":  # 256 samples at 40 %, 256 canvases' positives at 60 %: within 4 sd
            n = noise["out_of"]
            assert abs(noise["realised_rate"] - want.rate) < 4 * np.sqrt(want.rate * (1 - want.rate) / n)
        else:
            assert noise["realised_rate"] == 0
        labels.setdefault((row["dataset"], row["setting"]), set()).add(noise["train_labels_sha1"])
        assert row["noise_train_labels_sha1"] == noise["train_labels_sha1"]
    # every strategy and seed of one setting trained on the same corrupted labels; noisy ones differ from clean
    assert {k: len(v) for k, v in labels.items()} == {k: 1 for k in labels}
    assert labels["mnist", "clean"] != labels["mnist", "symmetric_40"]
    assert labels["mnist_multi", "clean"] != labels["mnist_multi", "missing_60"]
    # the tuning runs of a setting too
    tuned = {read_summary(runs / j.key / "summary.json")["noise"]["train_labels_sha1"]
             for j in tuning_jobs(protocol)[("mnist", "mlp", "symmetric_40", (("loss=gce",), "adam"))]}
    assert tuned == labels["mnist", "symmetric_40"]

    # the drop comparison: per seed, BCE's macro-F1 drop from clean minus WAN's, by hand
    def f1(strategy, setting):
        return [float(r["test/f1_macro"]) for r in sorted(rows, key=lambda r: int(r["seed"]))
                if (r["strategy"], r["setting"]) == (strategy, setting)]
    drops = [(bc - bn) - (wc - wn) for bc, bn, wc, wn in zip(f1("bce", "clean"), f1("bce", "missing_60"),
                                                            f1("wan", "clean"), f1("wan", "missing_60"), strict=True)]
    drop = next(c for c in done if c["a"] == "bce")
    assert drop["drop_from"] == "clean" and drop["on"] == "values"
    assert drop["test"]["mean_diff"] == pytest.approx(sum(drops) / 2, abs=1e-7)
    gce = next(c for c in done if c["a"] == "gce")
    assert gce["on"] == "integer counts (× 1/256)"

    text = (out / "report.md").read_text()
    for title in ("MNIST, mlp, clean labels", "MNIST, mlp, symmetric noise 40 %", "mnist_multi, mlp, clean labels",
                  "mnist_multi, mlp, 60 % of positives missing"):
        assert f"## {title}\n" in text, title
    for c in done:
        title = ("MNIST" if c["dataset"] == "mnist" else "mnist_multi") + ", mlp, " + settings[c["setting"]].label
        block = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
        [line] = [x for x in block.splitlines() if x.startswith(f"| {c['label']} |")]
        assert f"| **{c['verdict']}** |" in line
    assert "every run of the block trained on the same labels" in text
    assert "drop in macro-F1 % from clean" in text
    for name in ("noise_rates.png", "per_seed_mnist.png", "per_seed_mnist_multi.png", "differences.png",
                 "tuning_budget.png", "validation_mnist_mlp_symmetric_40.png"):
        assert (out / name).stat().st_size > 0, name
    assert "![noise_rates.png](noise_rates.png)" in text

    # the plot: one panel per dataset and noise kind, each loss's mean over seeds at rate 0 and at the noisy rate
    fig = noise_rate_plot(protocol, result["rows"])
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["MNIST, mlp: symmetric", "mnist_multi, mlp: missing"]
    for ax, dataset, metric, rate, names in ((axes[0], "mnist", "test/acc", 40, ("ce", "gce")),
                                             (axes[1], "mnist_multi", "test/f1_macro", 60, ("bce", "wan"))):
        lines = ax.get_lines()
        assert [ln.get_label() for ln in lines] == [protocol.strategies[n].label for n in names]
        for line, name in zip(lines, names, strict=True):
            noisy = "symmetric_40" if dataset == "mnist" else "missing_60"
            want = [100 * np.mean([float(r[metric]) for r in rows if (r["strategy"], r["setting"]) == (name, s)])
                    for s in ("clean", noisy)]
            assert list(line.get_xdata()) == [0, rate]
            assert list(line.get_ydata()) == pytest.approx(want, abs=1e-6)
