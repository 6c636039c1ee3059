"""From finished runs to the statistics of a reproduction: one row per seed run, every comparison of the
protocol tested (``lossbench.analysis.stats``), Holm over the report's family, verdicts, detectable
differences, and the Friedman ranks across settings.

The family is every comparison the report makes (all comparisons × datasets × models × settings of one
claim): the report's verdicts are read together, so the family-wise error rate covers all of them. A
comparison with ``drop_from: <setting>`` tests how much each strategy's metric fell from that setting (the
clean one) to the block's: per seed ``drop = value(reference) − value(block)``, then the paired tests on
``drop_a`` against ``drop_b`` (the same seed's difference in differences, seeds paired across settings too:
the same initial weights and batch order, only the training labels differ). Counts are tested as
integers: accuracy and exact match as correct samples out of ``test_size``, predicted/true labels as totals
over the test set, ``test/errors`` as it is; means and CIs are reported back in the metric's units."""

from __future__ import annotations

from typing import Any

import numpy as np

from lossbench.analysis.reproduce.jobs import Job
from lossbench.analysis.reproduce.protocol import Protocol
from lossbench.analysis.stats import ALPHA, assess_family, friedman, nemenyi_cliques, paired_comparison
from lossbench.paths import CONFIG_DIR
from lossbench.summary import read_summary

# per-sample fractions / means: value × test_size is an integer count
PER_SAMPLE_COUNTS = ("test/acc", "test/exact_match", "test/pred_count", "test/true_count")
INTEGER_METRICS = ("test/errors",)
LOWER_IS_BETTER = ("test/errors", "test/nll", "test/ece", "test/loss", "test/hamming")


def test_sizes(protocol: Protocol, data_root: str | None) -> dict[str, int]:
    """Test-set size per dataset, for exact error counts."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lossbench.build import build_datamodule

    sizes = {}
    for dataset in protocol.datasets:
        overrides = [f"experiment=reproduce_{protocol.preset}", f"data={dataset}", *protocol.datasets[dataset],
                     *protocol.overrides] + ([f"data.root={data_root}"] if data_root and dataset != "synthetic" else [])
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        sizes[dataset] = build_datamodule(cfg).describe()["sizes"]["test"]
    return sizes


NOISE_FIELDS = {"noise": "name", "noise_rate": "rate", "noise_realised_rate": "realised_rate",
                "noise_train_labels_sha1": "train_labels_sha1"}


def collect(jobs: list[Job], runs, sizes: dict[str, int]) -> list[dict[str, Any]]:
    """One row per seed run. Runs of a protocol with settings also carry the ``setting`` and their
    summary's ``noise`` record (kind, rate, realised rate, the training labels' fingerprint)."""
    rows = []
    for job in jobs:
        summary = read_summary(runs / job.key)
        metrics = dict(summary.get("metrics") or {})
        if "test/acc" in metrics and metrics["test/acc"] is not None:
            metrics["test/errors"] = round((1.0 - metrics["test/acc"]) * sizes[job.dataset])
        setting = {}
        if job.setting:
            noise = summary.get("noise") or {}
            setting = {"setting": job.setting, **{k: noise.get(v) for k, v in NOISE_FIELDS.items()}}
        rows.append({"dataset": job.dataset, "model": job.model, **setting, "strategy": job.strategy.name,
                     "optimizer": job.strategy.optimizer, "lr": job.lr, "seed": job.seed,
                     "status": summary["status"], "test_size": sizes.get(job.dataset), "run": job.key, **metrics})
    return rows


def select(rows: list[dict], dataset: str, model: str, strategy: str, setting: str = "") -> list[dict]:
    """The rows of one strategy in one block, by seed."""
    return sorted((r for r in rows if (r["dataset"], r["model"], r["strategy"], r.get("setting", "")) ==
                   (dataset, model, strategy, setting)), key=lambda r: int(r["seed"]))


def values(rows: list[dict], dataset: str, model: str, strategy: str, metric: str, setting: str = "") -> list[Any]:
    return [r.get(metric) for r in select(rows, dataset, model, strategy, setting)]


def as_counts(rows: list[dict], dataset: str, model: str, strategy: str, metric: str, setting: str = ""
              ) -> tuple[list[int], float] | None:
    """The per-seed values of ``metric`` as integers and the scale back to the metric (``1/test_size``), or
    None when the metric is not a count or a product is not an integer (then the values are tested)."""
    chosen = select(rows, dataset, model, strategy, setting)
    if metric in INTEGER_METRICS:
        return [int(r[metric]) for r in chosen], 1.0
    if metric not in PER_SAMPLE_COUNTS:
        return None
    sizes = {r.get("test_size") for r in chosen}
    if len(sizes) != 1 or None in sizes:
        return None
    size = int(sizes.pop())
    products = [float(r[metric]) * size for r in chosen]
    if any(abs(p - round(p)) > 0.05 for p in products):
        return None
    return [int(round(p)) for p in products], 1 / size


def paired_samples(rows: list[dict], dataset: str, model: str, setting: str, comp: dict
                   ) -> tuple[np.ndarray, np.ndarray, float | None, str] | str:
    """The per-seed samples of a comparison in one block: ``(a, b, scale, "on")`` -- integer counts with
    their scale where the metric is a count, else values with scale None -- or why it cannot be made.
    With ``drop_from`` each sample is the seed's drop from the reference setting to this one."""
    metric = comp["metric"]
    where = [setting] + ([comp["drop_from"]] if comp.get("drop_from") else [])
    raw = {(n, s): values(rows, dataset, model, comp[n], metric, s) for n in ("a", "b") for s in where}
    lengths = {len(v) for v in raw.values()}
    if 0 in lengths or len(lengths) != 1 or any(v is None or v == "" for vs in raw.values() for v in vs):
        return "a run diverged or failed, so the pairs are incomplete"
    counts = {k: as_counts(rows, dataset, model, comp[k[0]], metric, k[1]) for k in raw}
    if all(c is not None for c in counts.values()) and len({c[1] for c in counts.values()}) == 1:
        samples, scale = {k: np.array(c[0]) for k, c in counts.items()}, next(iter(counts.values()))[1]
        on = "integer counts" if scale == 1 else f"integer counts (× 1/{round(1 / scale)})"
    else:
        samples, scale, on = {k: np.array(v, dtype=float) for k, v in raw.items()}, None, "values"
    if comp.get("drop_from"):
        ref = comp["drop_from"]
        a, b = samples["a", ref] - samples["a", setting], samples["b", ref] - samples["b", setting]
    else:
        a, b = samples["a", setting], samples["b", setting]
    return a, b, scale, on


def family_text(protocol: Protocol, results: list[dict]) -> str:
    done = [r for r in results if "verdict" in r]
    claims = len({(r["a"], r["b"], r["metric"]) for r in done})
    if protocol.settings:
        blocks = len({(r["dataset"], r["model"], r["setting"]) for r in done})
        return (f"Holm over the {len(done)} comparisons of {protocol.claim_name} ({claims} comparison(s), each in "
                f"the dataset/model/setting blocks it applies to: {blocks} block(s))")
    settings = len({(r["dataset"], r["model"]) for r in done})
    return (f"Holm over the {len(done)} comparisons of {protocol.claim_name} ({claims} comparison(s) × "
            f"{settings} dataset/model setting(s))")


def analyse(protocol: Protocol, rows: list[dict], alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Every comparison of the protocol in every block it applies to, with the family's verdicts."""
    results = []
    for dataset, model, setting in protocol.blocks():
        for comp in protocol.comparisons_for(dataset, setting):
            entry: dict[str, Any] = {"dataset": dataset, "model": model,
                                     **({"setting": setting} if protocol.settings else {}), **comp}
            if comp["a"] not in protocol.strategies or comp["b"] not in protocol.strategies:
                entry["skipped"] = "a strategy of this comparison is not in this checkout"
                results.append(entry)
                continue
            samples = paired_samples(rows, dataset, model, setting, comp)
            if isinstance(samples, str):
                entry["skipped"] = samples
            else:
                a, b, scale, entry["on"] = samples
                entry["test"] = paired_comparison(a, b, scale) if scale is not None else paired_comparison(a, b)
            results.append(entry)
    done = [r for r in results if "test" in r]
    for r, extra in zip(done, assess_family([r["test"] for r in done], [r["claim"] for r in done], alpha),
                        strict=True):
        r.update(extra)
    family = family_text(protocol, results)
    for r in done:
        r["family"] = family
        r["test"] = r["test"].as_dict()
    return results


def ranks(protocol: Protocol, rows: list[dict], alpha: float = ALPHA) -> dict[str, Any] | None:
    """Friedman test + Nemenyi CD of the strategies over the settings on the first comparison's metric (mean
    over seeds), when there are ≥ 3 settings and ≥ 3 strategies. The settings: the dataset/model pairs, or
    with protocol settings the dataset/model/setting blocks on the datasets the first comparison runs on."""
    metric = protocol.comparisons[0]["metric"] if protocol.comparisons else None
    if metric is None:
        return None
    first = protocol.strategies.get(protocol.comparisons[0]["a"])
    blocks = [b for b in protocol.blocks() if first is None or first.runs_on(b[0])]
    names = [n for n, s in protocol.strategies.items() if all(s.runs_on(b[0]) for b in blocks)]
    if len(blocks) < 3 or len(names) < 3:
        return None
    table = []
    for d, m, setting in blocks:
        row = []
        for name in names:
            v = [x for x in values(rows, d, m, name, metric, setting) if x not in (None, "")]
            row.append(float(np.mean([float(x) for x in v])) if v else np.nan)
        table.append(row)
    table = np.array(table)
    keep = [j for j in range(len(names)) if not np.isnan(table[:, j]).any()]
    if len(keep) < 3:
        return None
    f = friedman(table[:, keep], [names[j] for j in keep], ["/".join(x for x in b if x) for b in blocks],
                 higher_is_better=metric not in LOWER_IS_BETTER, alpha=alpha)
    return {"metric": metric, **f.as_dict(), "cliques": nemenyi_cliques(f.mean_ranks, f.critical_difference)}


def validation_curves(protocol: Protocol, jobs: list[Job], runs) -> dict[str, dict[str, list[dict[int, float]]]]:
    """``"<dataset>/<model>[/<setting>]" -> strategy -> [per seed run: {epoch: select_by value}]`` from each
    run's ``metrics.csv``, to show where validation stopped improving."""
    import csv

    from lossbench.paths import METRICS_FILE

    curves: dict[str, dict[str, list[dict[int, float]]]] = {}
    for job in jobs:
        path = runs / job.key / METRICS_FILE
        if not path.is_file():
            continue
        points: dict[int, float] = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                metric = protocol.select_for(job.dataset)
                if row.get(metric) and row.get("epoch"):
                    points[int(float(row["epoch"]))] = float(row[metric])
        block = f"{job.dataset}/{job.model}" + (f"/{job.setting}" if job.setting else "")
        curves.setdefault(block, {}).setdefault(job.strategy.name, []).append(points)
    return curves


def goal_checks(protocol: Protocol, rows: list[dict]) -> list[dict[str, Any]]:
    """For each ``goals`` entry (``"<dataset>/<model>": accuracy``): the best strategy's mean test accuracy
    and whether it reached the goal."""
    out = []
    for setting, goal in protocol.goals.items():
        dataset, _, model = setting.partition("/")
        best = None
        for name in protocol.strategies:
            v = [float(x) for x in values(rows, dataset, model, name, "test/acc") if x not in (None, "")]
            if v and (best is None or np.mean(v) > best[1]):
                best = (name, float(np.mean(v)))
        if best is not None:
            out.append({"setting": setting, "goal": float(goal), "strategy": best[0], "mean": best[1],
                        "met": best[1] >= float(goal)})
    return out
