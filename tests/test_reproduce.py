"""The reproduction on tiny settings (``--profile quick``): real MNIST / synthetic runs, real report; the
committed reports' verdicts checked against their own p-values, and recomputed from their results.json."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from lossbench import losses
from lossbench.analysis.reproduce import main, reanalyse, reproduce
from lossbench.analysis.reproduce.jobs import job_overrides, member_groups, train_jobs
from lossbench.analysis.reproduce.protocol import load_protocol
from lossbench.analysis.reproduce.report import statistics_text
from lossbench.analysis.reproduce.tuning import seed_jobs
from lossbench.paths import CHECKPOINT, CONFIG_DIR
from lossbench.summary import read_summary

REPORTS = Path(__file__).resolve().parents[1] / "reports"
# every committed reproduction report, and how many comparisons its claim's family holds (written out here,
# not read from the protocol, so a report that lost or gained comparisons fails)
FAMILY_SIZES = {"reproduce_mnist": 24, "reproduce_mnist_cpu": 24, "reproduce_multilabel": 10,
                "reproduce_multilabel_cpu": 10, "reproduce_noise_cpu": 44,
                "reproduce_mnist_converged_cpu": 10, "reproduce_multilabel_converged_cpu": 10,
                "reproduce_mnist_converged_cpu_xeon": 10}
COMMITTED = tuple(sorted(p.parent.name for p in REPORTS.glob("reproduce_*/results.json")))


def _rows(report_dir):
    with open(report_dir / "runs.csv", newline="") as f:
        return list(csv.DictReader(f))


def holm_by_hand(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment written out: sort, multiply by m, m-1, ..., keep it monotone, cap at 1."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for step, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - step) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def check_verdicts_follow_from_p_values(results: dict) -> list[str]:
    """Every verdict of a results.json re-derived from its raw p-values and test directions; returns them.
    A comparison without a verdict must say why it was skipped."""
    alpha = results["alpha"]
    for c in results["comparisons"]:
        assert ("verdict" in c) != bool(c.get("skipped")), c
    done = [c for c in results["comparisons"] if "verdict" in c]
    assert done, "no comparison was made"
    assert {c["family_size"] for c in done} == {len(done)}  # one family: every comparison of the report
    for key, holm in (("p_t", "p_t_holm"), ("p_wilcoxon", "p_wilcoxon_holm")):
        expected = holm_by_hand([c["test"][key] for c in done])
        assert [c[holm] for c in done] == pytest.approx(expected, rel=1e-12), holm
    for c in done:
        t = c["test"]
        significant = c["p_t_holm"] < alpha and c["p_wilcoxon_holm"] < alpha
        want = 1 if c["claim"] == "greater" else -1
        if significant and t["t_direction"] == t["wilcoxon_direction"] == want:
            assert c["verdict"] == "supported", c
        elif significant and t["t_direction"] == t["wilcoxon_direction"] == -want:
            assert c["verdict"] == "contradicted", c
        elif significant and t["t_direction"] != t["wilcoxon_direction"]:
            assert c["verdict"] == "tests disagree in direction", c
        else:
            assert c["verdict"] == f"no significant difference at n={t['n_a']}", c
        # the Wilcoxon direction is its own: W+ against W-
        assert t["wilcoxon_direction"] == (t["rank_stat"] > t["rank_opposite"]) - (t["rank_stat"] < t["rank_opposite"])
        assert c["detectable_alpha"] == pytest.approx(alpha / len(done))
    return [c["verdict"] for c in done]


def check_report_structure(out: Path, results: dict) -> None:
    """report.md holds one table row per comparison with the verdict results.json gives, the family named."""
    text = (out / "report.md").read_text()
    done = [c for c in results["comparisons"] if "verdict" in c]
    assert f"Family: Holm over the {len(done)} comparisons of claim" in text
    for c in done:
        title = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "synthetic": "synthetic multi-label"}.get(
            c["dataset"], c["dataset"])
        heading = f"## {title}, {c['model']}"
        if c.get("setting"):  # protocols with settings (claim 3): one section per dataset/model/setting block
            heading += ", " + load_protocol(results["preset"], profile=results["profile"]).settings[c["setting"]].label
        section = text.split(heading + "\n", 1)[1].split("\n## ", 1)[0]
        [row] = [line for line in section.splitlines() if line.startswith(f"| {c['label']} |")]
        assert f"| **{c['verdict']}** |" in row
    csv_rows = _rows(out)
    assert len(csv_rows) == len(results["runs"])
    assert {r["run"] for r in csv_rows} == {r["run"] for r in results["runs"]}


@pytest.mark.slow
def test_quick_mnist_reproduction_reports_resumes_and_repeats_exactly(mnist_root, tmp_path):
    out, runs = tmp_path / "report", tmp_path / "runs"
    first = reproduce("mnist", out, runs, device="cpu", n_jobs=1, quick=True, data_root=str(mnist_root),
                      commit="abc1234")
    # 2 losses x 2 rates tuned; 3 strategies x 2 seeds, one of which may share the tuned runs' configuration
    assert 8 <= first["trained"] <= 10
    text = (out / "report.md").read_text()
    assert "## MNIST, mlp" in text and "Rate tuning (validation split)" in text
    assert "- lossbench commit: abc1234" in text
    for name in ("runs.csv", "results.json", "per_seed_mnist.png", "differences.png"):
        assert (out / name).stat().st_size > 0, name

    rows = _rows(out)
    assert len(rows) == 6 and {r["strategy"] for r in rows} == {"ce_tuned", "bce_tuned", "bce_sum_classes"}
    for r in rows:  # the test set the reproduction sized (512) is the one each run evaluated
        assert r["test_size"] == "512" and float(r["test/samples"]) == 512
        correct = read_summary(runs / r["run"])["metrics"]["test/acc"] * 512  # the run's own accuracy
        assert correct == pytest.approx(round(correct), abs=1e-6)  # a whole number of the 512 samples
        assert int(r["test/errors"]) < 0.9 * 512  # better than guessing one of 10 digits

    results = json.loads((out / "results.json").read_text())
    verdicts = check_verdicts_follow_from_p_values(results)
    check_report_structure(out, results)
    assert len(verdicts) == len(results["comparisons"]) == 1  # none skipped
    assert verdicts == ["no significant difference at n=2"]  # 2 seeds: Wilcoxon p >= 2/4
    tuned = next(c for c in results["comparisons"] if (c["a"], c["b"]) == ("ce_tuned", "bce_tuned"))
    assert tuned["on"] == "integer counts (× 1/512)" and tuned["detectable"] is None  # n=2 can never decide
    # tested on error counts, reported back as CE's accuracy minus BCE's: the runs' own accuracies, seed by seed
    acc = {s: [read_summary(runs / r["run"])["metrics"]["test/acc"]
               for r in sorted(rows, key=lambda r: int(r["seed"])) if r["strategy"] == s]
           for s in ("ce_tuned", "bce_tuned")}
    assert tuned["test"]["mean_diff"] == pytest.approx(
        sum(a - b for a, b in zip(acc["ce_tuned"], acc["bce_tuned"], strict=True)) / 2, abs=1e-9)

    # a killed reproduction continues: only the run without a summary is trained, to the same numbers
    victim = runs / rows[0]["run"] / "summary.json"
    victim.unlink()
    again = reproduce("mnist", out, runs, device="cpu", n_jobs=1, quick=True, data_root=str(mnist_root))
    assert again["trained"] == 1
    assert _rows(out) == rows


@pytest.mark.slow
def test_quick_multilabel_reproduction_compares_label_counts(tmp_path):
    result = reproduce("multilabel", tmp_path / "report", tmp_path / "runs", device="cpu", n_jobs=1, quick=True)
    rows = _rows(tmp_path / "report")
    assert len(rows) == 3 * 2 * 2  # losses x optimizers x seeds
    assert all(r["status"] == "completed" for r in rows)
    assert all(float(r["test/true_count"]) > 0 for r in rows)
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    verdicts = check_verdicts_follow_from_p_values(results)
    check_report_structure(tmp_path / "report", results)
    assert len(verdicts) == len(results["comparisons"]) > 0  # none skipped
    assert verdicts == ["no significant difference at n=2"] * len(verdicts)  # 2 seeds: Wilcoxon p >= 2/4
    claims = {(c["a"], c["b"], c["metric"]): c for c in result["results"]}
    count = claims[("abs_kl+adam", "bce_with_logits+adam", "test/pred_count")]
    assert count["claim"] == "less" and count["on"] == "integer counts (× 1/256)"
    # predicted labels are compared as totals over the 256 test samples: integers
    totals = [float(r["test/pred_count"]) * 256 for r in rows]
    assert all(abs(t - round(t)) < 0.01 for t in totals)
    assert ("partition_kl_mse+adadelta", "bce_with_logits+adam", "test/f1_macro") in claims
    text = (tmp_path / "report" / "report.md").read_text()
    assert "predicted labels" in text and "true labels" in text
    assert "Ranks across settings: not computed (1 dataset/model setting(s)" in text


@pytest.mark.slow
def test_quick_converged_protocol_tunes_with_equal_budgets_and_trains_seeds_as_members(mnist_root, tmp_path):
    out, runs = tmp_path / "report", tmp_path / "runs"
    result = reproduce("mnist_converged", out, runs, device="cpu", n_jobs=1, profile="quick",
                       data_root=str(mnist_root))
    protocol = load_protocol("mnist_converged", profile="quick")
    trials = protocol.lr_grid["adam"]
    assert len(trials) == 3 and len(set(trials)) == 3 and all(1e-3 <= r <= 1e-2 for r in trials)
    # every tuned strategy was tuned on exactly the same trials
    assert [sorted(c["scores"]) for c in result["chosen"].values()] == [trials, trials]
    results = json.loads((out / "results.json").read_text())
    verdicts = check_verdicts_follow_from_p_values(results)
    check_report_structure(out, results)
    assert len(verdicts) == len(results["comparisons"]) > 0  # none skipped
    assert verdicts == ["no significant difference at n=3"] * len(verdicts)  # 3 seeds: Wilcoxon p >= 2/8
    text = (out / "report.md").read_text()
    assert "Expected best val acc % for a budget of n tuning trials" in text
    assert "each setting's seeds trained together as members" in text
    for name in ("tuning_budget.png", "validation_mnist_mlp.png"):
        assert (out / name).stat().st_size > 0, name
    # the seeds of one setting came from one members run: one stacked batch order per seed, same folders
    rows = _rows(out)
    assert len(rows) == 3 * 3 and all(r["status"] == "completed" for r in rows)
    ce = [r for r in rows if r["strategy"] == "ce_tuned"]
    assert len({r["test/acc"] for r in ce}) > 1  # the seeds differ
    # the validation curves of each run are in results.json (one point per epoch)
    curves = results["curves"]["mnist/mlp"]
    assert {len(run) for runs_ in curves.values() for run in runs_} == {2}
    # the goal (50 %) against the best strategy's mean accuracy, from the runs' own summaries
    means = {s: sum(read_summary(runs / r["run"])["metrics"]["test/acc"] for r in rows if r["strategy"] == s) / 3
             for s in {r["strategy"] for r in rows}}
    best = max(means, key=means.get)
    [goal] = results["goals"]
    assert (goal["setting"], goal["strategy"]) == ("mnist/mlp", best)
    assert goal["mean"] == pytest.approx(means[best], abs=1e-9) and means[best] > 0.5
    assert goal["met"] is True and "goal ≥ 50.0 %: reached" in text


@pytest.mark.slow
def test_quick_claim_2_at_full_size_tunes_every_strategy_on_the_same_trials_and_reports(tmp_path):
    out, runs = tmp_path / "report", tmp_path / "runs"
    result = reproduce("multilabel_converged", out, runs, device="cpu", n_jobs=1, profile="quick")
    protocol = load_protocol("multilabel_converged", profile="quick")
    # each optimizer's trials are shared by every strategy tuned with it
    for (_, _, _, (_, optimizer)), chosen in result["chosen"].items():
        assert sorted(chosen["scores"]) == sorted(protocol.lr_grid[optimizer])
    assert {key[3][1] for key in result["chosen"]} == {"adam", "adadelta"}
    results = json.loads((out / "results.json").read_text())
    verdicts = check_verdicts_follow_from_p_values(results)
    check_report_structure(out, results)
    assert verdicts == ["no significant difference at n=2"] * len(results["comparisons"])  # 2 seeds
    text = (out / "report.md").read_text()
    assert "Expected best val macro-F1 % for a budget of n tuning trials" in text
    assert "each setting's seeds trained together as members" in text
    assert "tested as integer counts (× 1/256), so" in text  # one dataset: one scale, no dataset named


def test_member_groups_sharing_a_folder_write_no_common_stack_checkpoint(tmp_path):
    # the groups of one dataset and model train into one parent folder at the same time: a stack checkpoint
    # there would be one file for all of them; each run keeps its own checkpoint
    protocol = load_protocol("multilabel_converged", profile="quick")
    protocol.overrides = [*protocol.overrides, "trainer.checkpoint=true"]
    jobs = seed_jobs(protocol, {})
    assert len({(j.dataset, j.model) for j in jobs}) == 1 and len(member_groups(jobs)) == 3
    statuses = train_jobs(jobs, protocol, tmp_path, "cpu", n_jobs=1, data_root=None, threads=1)
    assert statuses == ["completed"] * len(jobs)
    parent = tmp_path / Path(jobs[0].key).parent
    assert not (parent / CHECKPOINT).exists()
    first_weights = []
    for job in jobs:
        saved = torch.load(tmp_path / job.key / CHECKPOINT, map_location="cpu", weights_only=False)
        assert saved["hyper_parameters"]["optimizer"]["lr"] == pytest.approx(job.lr)
        first_weights.append(next(iter(saved["state_dict"].values())))
    assert not any(torch.equal(a, b) for i, a in enumerate(first_weights) for b in first_weights[i + 1:])


@pytest.mark.slow
def test_members_and_separate_runs_give_the_same_numbers_on_a_cpu(mnist_root, tmp_path):
    """On a CPU the members loop runs each seed's own operations in order: the same numbers as one process
    per seed (``--separate``)."""
    common = dict(device="cpu", n_jobs=1, quick=True, data_root=str(mnist_root))
    members = reproduce("mnist", tmp_path / "m", tmp_path / "mruns", **common)
    separate = reproduce("mnist", tmp_path / "s", tmp_path / "sruns", separate=True, **common)
    key = ("strategy", "seed")
    a = sorted(members["rows"], key=lambda r: tuple(r[k] for k in key))
    b = sorted(separate["rows"], key=lambda r: tuple(r[k] for k in key))
    assert [r["test/acc"] for r in a] == [r["test/acc"] for r in b]
    assert [r["test/nll"] for r in a] == pytest.approx([r["test/nll"] for r in b], abs=1e-6)


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_report_verdicts_follow_from_its_own_p_values(name):
    results = json.loads((REPORTS / name / "results.json").read_text())
    verdicts = check_verdicts_follow_from_p_values(results)
    check_report_structure(REPORTS / name, results)
    assert name in FAMILY_SIZES, f"a new committed report: add {name} and its family's size to FAMILY_SIZES"
    assert len(verdicts) == FAMILY_SIZES[name]


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_report_is_what_reanalyse_computes_from_its_runs(name, tmp_path):
    # the committed statistics are this checkout's: recomputed from results.json alone, nothing trained
    folder = tmp_path / name
    shutil.copytree(REPORTS / name, folder)
    reanalyse(folder, command="test")
    fresh, committed = (json.loads((p / "results.json").read_text()) for p in (folder, REPORTS / name))
    assert fresh["comparisons"] == committed["comparisons"]
    assert fresh["ranks"] == committed["ranks"]
    assert fresh["runs"] == committed["runs"]
    assert (folder / "runs.csv").read_text() == (REPORTS / name / "runs.csv").read_text()


def test_statistics_line_names_the_dataset_of_each_count_scale():
    # claim 2's test sets differ in size (synthetic 2,000 samples, mnist_multi 10,000): each scale says where
    results = json.loads((REPORTS / "reproduce_multilabel_converged_cpu" / "results.json").read_text())
    text = statistics_text(results["comparisons"])
    assert ("tested as integer counts (× 1/2000) on synthetic, integer counts (× 1/10000) on mnist_multi, so"
            in text)
    one_scale = [r for r in results["comparisons"] if r["dataset"] == "mnist_multi"]
    assert "tested as integer counts (× 1/10000), so" in statistics_text(one_scale)


def test_reanalyse_rejects_a_folder_without_results(tmp_path, capsys):
    assert main(["--reanalyse", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'results.json'} does not exist; pass a report "
                                               "folder written by the reproduction")
    assert main(["mnist", "--reanalyse", str(tmp_path)]) == 2
    assert "--reanalyse takes the preset and profile from the report's results.json" in capsys.readouterr().err


def test_protocols_pair_every_comparison_with_defined_strategies():
    for preset in ("mnist", "multilabel"):
        protocol = load_protocol(preset)
        assert len(protocol.seeds) >= 6 and protocol.tune_seed not in protocol.seeds
        for comp in protocol.comparisons:
            assert comp["claim"] in ("greater", "less")
            assert {comp["a"], comp["b"]} <= set(protocol.strategies), comp
    assert len(load_protocol("mnist").seeds) >= 10


def test_a_loss_missing_from_the_checkout_is_reported_not_run(monkeypatch):
    monkeypatch.setattr(losses, "available", lambda: ["bce_with_logits", "cross_entropy"])
    protocol = load_protocol("multilabel")
    assert set(protocol.strategies) == {f"{lo}+{o}" for lo in ("bce_with_logits", "cross_entropy")
                                        for o in ("adam", "adadelta")}
    assert any("zlpr" in m for m in protocol.missing)


def test_cli_rejects_bad_options_with_one_line(capsys, tmp_path):
    assert main(["mnist", "--jobs", "0", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: --jobs=0 is invalid; allowed: an integer >= 1"
    assert main(["mnist", "--device", "tpu", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: --device='tpu' is invalid; allowed: cpu, gpu, auto"


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_cpu_profiles_keep_the_issues_requirements_and_compose():
    full, cpu = load_protocol("mnist"), load_protocol("mnist", profile="cpu")
    assert set(cpu.datasets) == {"mnist", "fashion_mnist"} and set(cpu.models) == {"cnn", "mlp"}
    assert len(cpu.seeds) >= 10 and cpu.tune_seed not in cpu.seeds and len(cpu.lr_grid["adam"]) >= 3
    assert cpu.strategies == full.strategies and cpu.comparisons == full.comparisons
    assert {"ce_tuned", "bce_tuned", "ce_same", "bce_same", "bce_sum_classes"} <= set(cpu.strategies)
    jobs = {(j.dataset, j.model): j for j in seed_jobs(cpu, {})}
    cnn = _compose(job_overrides(cpu, jobs["fashion_mnist", "cnn"], "cpu", None))
    mlp = _compose(job_overrides(cpu, jobs["mnist", "mlp"], "cpu", None))
    assert (cnn.model.channels, cnn.data.train_size, cnn.data.test_size, cnn.trainer.max_epochs) == ([8, 16], 4000, 5000, 3)
    assert (mlp.model.hidden, mlp.data.train_size, mlp.trainer.max_epochs) == ([256, 256], 4000, 3)
    assert cnn.trainer.accelerator == "cpu" and cnn.trainer.deterministic

    full, cpu = load_protocol("multilabel"), load_protocol("multilabel", profile="cpu")
    assert set(cpu.datasets) == {"synthetic", "mnist_multi"} and len(cpu.seeds) >= 3
    assert cpu.strategies == full.strategies and cpu.comparisons == full.comparisons
    assert {s.optimizer for s in cpu.strategies.values()} == {"adam", "adadelta"}
    assert {s.loss for s in cpu.strategies.values()} >= {"bce_with_logits", "bce_manual", "abs_kl", "cross_entropy",
                                                          "partition_softmax"}
    job = next(j for j in seed_jobs(cpu, {}) if j.dataset == "mnist_multi")
    multi = _compose(job_overrides(cpu, job, "cpu", None))
    assert (multi.data.train_size, multi.data.test_size, multi.trainer.max_epochs) == (4000, 3000, 4)


def test_cli_rejects_quick_with_another_profile(capsys, tmp_path):
    assert main(["mnist", "--quick", "--profile", "cpu", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: --quick contradicts --profile cpu; give one of them"
    assert main([]) == 2
    assert capsys.readouterr().err.strip() == "error: give a preset (mnist or multilabel) or --reanalyse REPORT_DIR"


def test_converged_protocols_keep_the_forums_regime_and_equal_budgets():
    """Issue: full data, models to a plateau, >= 20 test seeds (claim 1), the same tuning trials for every
    tuned strategy, the strategies asked for, and seeds enough for the Wilcoxon test to pass Holm."""
    for preset, profile in (("mnist_converged", "full"), ("mnist_converged", "cpu")):
        protocol = load_protocol(preset, profile=profile)
        assert len(protocol.seeds) >= 20 and protocol.tune_seed not in protocol.seeds
        assert protocol.lr_search["adam"]["trials"] >= 6
        m = len(protocol.comparisons) * len(protocol.datasets) * len(protocol.models)
        assert 2 / 2 ** len(protocol.seeds) < 0.05 / m  # the exact Wilcoxon test can pass Holm
        labels = {s.overrides: s for s in protocol.strategies.values()}
        tuned = {s.overrides for s in protocol.strategies.values() if s.lr == "tuned"}
        assert tuned == {("loss=cross_entropy",), ("loss=bce_with_logits",),
                         ("loss=cross_entropy", "loss.label_smoothing=0.1")}
        assert ("loss=bce_with_logits", "loss.reduction=sum_classes") in labels
        assert {s.optimizer for s in protocol.strategies.values()} == {"adam", "sgd"}
        jobs = {(j.dataset, j.model): j for j in seed_jobs(protocol, {})}
        for (dataset, model), job in jobs.items():
            cfg = _compose(job_overrides(protocol, job, "cpu", None))
            assert cfg.data.train_size is None and cfg.data.val_size == 5000 and cfg.data.test_size is None
            assert cfg.scheduler.name == "cosine" and cfg.trainer.max_epochs >= 10, (dataset, model)
    assert set(load_protocol("mnist_converged").models) == {"mlp", "cnn"}
    assert set(load_protocol("mnist_converged", profile="cpu").models) == {"mlp"}
    claim2 = load_protocol("multilabel_converged")
    m = len(claim2.comparisons) * len(claim2.datasets)
    assert 2 / 2 ** len(claim2.seeds) < 0.05 / m
    job = next(j for j in seed_jobs(claim2, {}) if j.dataset == "mnist_multi")
    assert _compose(job_overrides(claim2, job, "cpu", None)).data.train_size == 55000


@pytest.mark.parametrize("preset", ["mnist_converged", "multilabel_converged"])
def test_each_tuning_row_names_what_sets_its_strategy_apart(preset):
    """Label-smoothed CE and plain CE (claim 1), BCE under Adam and under Adadelta (claim 2) are different
    tunings: their rows in the tuning and expected-best tables must not read the same."""
    from lossbench.analysis.reproduce.report import budget_curves, tuning_table

    protocol = load_protocol(preset)
    dataset, model = next(iter(protocol.datasets)), next(iter(protocol.models))
    chosen = {(dataset, model, "", s.tuning_key): {"lr": 1e-3, "scores": {1e-3: 0.9, 3e-3: 0.8}}
              for s in protocol.strategies.values() if s.lr == "tuned"}
    labels = [label for label, _ in budget_curves(protocol, chosen, dataset, model)]
    assert len(labels) == len(chosen) == len(set(labels)) >= 3
    assert all("tuned rate" not in label for label in labels)
    rows = [line.split(" | ")[0] for line in tuning_table(protocol, chosen, dataset, model) if line.startswith("| ")]
    assert {r.lstrip("| ") for r in rows} >= set(labels)
