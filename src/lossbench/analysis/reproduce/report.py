"""The reproduction's report: ``report.md`` (tables per dataset/model, the family and the verdicts),
``runs.csv`` (one row per seed run), ``results.json`` (the same plus tuning scores and every statistic) and
PNG plots (:mod:`lossbench.analysis.plots`)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from lossbench.analysis import plots
from lossbench.analysis.reproduce.protocol import Protocol
from lossbench.analysis.stats import ALPHA, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, EXACT_MAX_N, POWER, mean_std
from lossbench.summary import write_atomic, write_json_atomic

# metric -> (column title, display scale, decimals); differences use the same scale
METRICS = {
    "test/acc": ("acc %", 100, 2),
    "test/errors": ("test errors", 1, 1),
    "test/nll": ("NLL", 1, 4),
    "test/ece": ("ECE %", 100, 2),
    "test/exact_match": ("exact match %", 100, 2),
    "test/f1_macro": ("macro-F1 %", 100, 2),
    "test/f1_micro": ("micro-F1 %", 100, 2),
    "test/map": ("mAP %", 100, 2),
    "test/pred_count": ("predicted labels", 1, 3),
    "test/true_count": ("true labels", 1, 3),
    "val/acc": ("val acc %", 100, 2),
    "val/f1_macro": ("val macro-F1 %", 100, 2),
}
DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "synthetic": "synthetic multi-label",
                  "mnist_multi": "mnist_multi"}
UNITS = {100: " pp", 1: ""}


def fmt(metric: str, value: float, signed: bool = False) -> str:
    _, scale, digits = METRICS.get(metric, (metric, 1, 4))
    return f"{value * scale:{'+' if signed else ''}.{digits}f}"


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def fmt_lr(lr: float) -> str:
    return f"{lr:g}"


def fmt_detectable(metric: str, value: float | None) -> str:
    if value is None or math.isinf(value):
        return "none: Wilcoxon cannot reach α/m"
    return fmt(metric, value) + UNITS.get(METRICS.get(metric, (metric, 1))[1], "")


def strategy_table(protocol: Protocol, rows: list[dict], dataset: str, model: str) -> list[str]:
    heads = [METRICS.get(m, (m,))[0] for m in protocol.table_metrics]
    lines = ["| strategy | optimizer | rate | " + " | ".join(heads) + " |",
             "|---|---|---|" + "---:|" * len(heads)]
    for s in protocol.strategies.values():
        sel = [r for r in rows if (r["dataset"], r["model"], r["strategy"]) == (dataset, model, s.name)]
        if not sel:
            continue
        cells = []
        for metric in protocol.table_metrics:
            vals = [r.get(metric) for r in sel]
            good = [float(v) for v in vals if v not in (None, "")]
            _, scale, digits = METRICS.get(metric, (metric, 1, 4))
            text = "–" if not good else (f"{mean_std(good).mean * scale:.{digits}f} ± "
                                         f"{mean_std(good).std * scale:.{digits}f}")
            if len(good) < len(vals):
                text += f" ({len(vals) - len(good)} of {len(vals)} diverged/failed)"
            cells.append(text)
        rate = fmt_lr(float(sel[0]["lr"])) + (" (tuned)" if s.lr == "tuned" else "")
        lines.append(f"| {s.label} | {s.optimizer} | {rate} | " + " | ".join(cells) + " |")
    return lines


def tuning_table(protocol: Protocol, chosen: dict, dataset: str, model: str) -> list[str]:
    entries = [(s, chosen[(dataset, model, s.tuning_key)]) for s in protocol.strategies.values()
               if s.lr == "tuned" and (dataset, model, s.tuning_key) in chosen]
    seen, lines = set(), []
    for s, c in entries:
        if s.tuning_key in seen:
            continue
        seen.add(s.tuning_key)
        scores = ", ".join(("**" if lr == c["lr"] else "") + f"{fmt_lr(lr)}: " +
                           ("diverged" if math.isinf(v) else fmt(protocol.select_by, v)) +
                           ("**" if lr == c["lr"] else "") for lr, v in sorted(c["scores"].items()))
        lines.append(f"| {s.label.split(',')[0]} | {s.optimizer} | {scores} |")
    if not lines:
        return []
    title = METRICS.get(protocol.select_by, (protocol.select_by,))[0]
    return [f"| loss | optimizer | {title} at each rate (chosen in bold) |", "|---|---|---|", *lines]


COMPARISON_HEADER = ("| claim (a vs b) | metric | mean a − b | 95% CI (t) | 95% CI (bootstrap) | d_z | t-test p | "
                     "Wilcoxon p | t p, Holm | Wilcoxon p, Holm | direction t / W | verdict | detectable (80% power) |")


def comparison_table(results: list[dict], dataset: str, model: str) -> list[str]:
    lines = [COMPARISON_HEADER, "|---|---|---:|---|---|---:|---:|---:|---:|---:|---|---|---:|"]
    arrows = {1: "a > b", -1: "a < b", 0: "–"}
    for r in results:
        if (r["dataset"], r["model"]) != (dataset, model):
            continue
        title = METRICS.get(r["metric"], (r["metric"],))[0]
        if "skipped" in r:
            lines.append(f"| {r['label']} | {title} | – | – | – | – | – | – | – | – | – | not run: {r['skipped']} | – |")
            continue
        t, m = r["test"], r["metric"]
        lines.append(
            f"| {r['label']} | {title} | {fmt(m, t['mean_diff'], True)} | "
            f"[{fmt(m, t['ci_low'], True)}, {fmt(m, t['ci_high'], True)}] | "
            f"[{fmt(m, t['boot_low'], True)}, {fmt(m, t['boot_high'], True)}] | {t['effect_size']:+.2f} | "
            f"{fmt_p(t['p_t'])} | {fmt_p(t['p_wilcoxon'])} | {fmt_p(r['p_t_holm'])} | {fmt_p(r['p_wilcoxon_holm'])} | "
            f"{arrows[t['t_direction']]} / {arrows[t['wilcoxon_direction']]} | **{r['verdict']}** | "
            f"{fmt_detectable(m, r['detectable'])} |")
    return lines


def statistics_text(results: list[dict], alpha: float = ALPHA) -> str:
    done = [r for r in results if "verdict" in r]
    if not done:
        return "- statistics: no comparison could be made"
    m = len(done)
    family = done[0]["family"]
    integer = sorted({r["on"] for r in done if r["on"] != "values"})
    return (f"- statistics (`lossbench/analysis/stats.py`, `docs/statistics.md`): mean ± sample std over seeds; "
            f"per-seed paired differences a − b with a Student-t 95% CI and a percentile bootstrap 95% CI "
            f"({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}); Cohen's d_z; two-sided paired t-test and "
            f"Wilcoxon signed-rank test (exact distribution for ≤ {EXACT_MAX_N} non-zero differences, zeros "
            f"dropped, midranks for ties; its direction from W+ vs W−). "
            + (f"Accuracies and counts are tested as {', '.join(integer)}, so equal counts tie exactly. "
               if integer else "")
            + f"**Family: {family}**, separately for the t-test and the Wilcoxon p-values. Verdict on the stated "
            f"claim: *supported* when both Holm-adjusted p < {alpha:g} and both tests point the claim's way, "
            f"*contradicted* when both are < {alpha:g} and point the other way, else *no significant difference*. "
            f"Detectable: the smallest |a − b| the paired t-test finds with {POWER:.0%} power at "
            f"α/m = {alpha:g}/{m} = {alpha / m:.2g} from the observed spread; *none* where the Wilcoxon test "
            f"cannot reach α/m with this many seeds (its smallest p is 2/2ⁿ).")


def rank_lines(ranks: dict[str, Any] | None, protocol: Protocol) -> list[str]:
    if ranks is None:
        settings = len(protocol.datasets) * len(protocol.models)
        return [f"Ranks across settings: not computed ({settings} dataset/model setting(s); the Friedman "
                "test here needs at least 3 settings and 3 strategies).", ""]
    labels = {n: protocol.strategies[n].label for n in ranks["strategies"]}
    title = METRICS.get(ranks["metric"], (ranks["metric"],))[0]
    lines = [f"Mean rank on {title} (mean over seeds per setting; 1 = best) over the {len(ranks['settings'])} "
             f"dataset/model settings:", "",
             "| strategy | " + " | ".join(ranks["settings"]) + " | mean rank |",
             "|---|" + "---:|" * (len(ranks["settings"]) + 1)]
    for j, name in sorted(enumerate(ranks["strategies"]), key=lambda x: ranks["mean_ranks"][x[0]]):
        lines.append(f"| {labels[name]} | " + " | ".join(f"{row[j]:g}" for row in ranks["ranks"])
                     + f" | {ranks['mean_ranks'][j]:.2f} |")
    lines += ["", f"Friedman test: χ²_F = {ranks['statistic']:.2f}, p = {fmt_p(ranks['p'])}; Nemenyi critical "
                  f"difference at α = {ranks['alpha']:g}: {ranks['critical_difference']:.2f} "
                  "(`critical_difference.png`). With so few settings the test has little power; it is the "
                  "overview, the paired comparisons above are the tests of the claims.", ""]
    return lines


def per_seed_plot(protocol: Protocol, rows: list[dict], dataset: str):
    metric = protocol.comparisons[0]["metric"]
    scale = METRICS.get(metric, (metric, 1))[1]
    names = list(protocol.strategies)
    panels = []
    for model in protocol.models:
        by_seed = {}
        for seed in protocol.seeds:
            by_seed[seed] = [next((float(r[metric]) * scale for r in rows
                                   if (r["dataset"], r["model"], r["strategy"], int(r["seed"])) ==
                                   (dataset, model, name, seed) and r.get(metric) not in (None, "")), None)
                             for name in names]
        panels.append((f"{DATASET_TITLES.get(dataset, dataset)}, {model}", names, by_seed))
    return plots.plot_per_seed(panels, METRICS.get(metric, (metric,))[0])


def write_plots(protocol: Protocol, rows: list[dict], results: list[dict], ranks: dict | None,
                out: Path) -> list[str]:
    files = []
    if protocol.comparisons:
        for dataset in protocol.datasets:
            plots.save_figure(per_seed_plot(protocol, rows, dataset), out / f"per_seed_{dataset}.png")
            files.append(f"per_seed_{dataset}.png")
    done = [r for r in results if "verdict" in r]
    if done:
        entries = []
        for r in done:
            s, t = METRICS.get(r["metric"], (r["metric"], 1))[1], r["test"]
            entries.append({"label": f"{r['dataset']}/{r['model']}: {r['label']} [{METRICS.get(r['metric'], (r['metric'],))[0]}]",
                            "mean": t["mean_diff"] * s, "low": t["ci_low"] * s, "high": t["ci_high"] * s,
                            "verdict": r["verdict"], "detectable": r["detectable"] * s})
        plots.save_figure(plots.plot_differences(
            entries, "mean paired difference a − b, 95% t CI (green: supported, red: contradicted after Holm; "
                     "grey band: ± detectable with 80% power)"), out / "differences.png")
        files.append("differences.png")
    if ranks is not None:
        labels = [protocol.strategies[n].label for n in ranks["strategies"]]
        plots.save_figure(plots.plot_critical_difference(
            labels, ranks["mean_ranks"], ranks["critical_difference"], ranks["cliques"],
            f"mean rank on {ranks['metric']} over {len(ranks['settings'])} settings (Friedman p = "
            f"{fmt_p(ranks['p'])})"), out / "critical_difference.png")
        files.append("critical_difference.png")
    return files


def budget_curves(protocol: Protocol, chosen: dict, dataset: str, model: str) -> list[tuple[str, dict]]:
    """(strategy label, expected-max curve) for each tuned strategy of a setting; a diverged trial counts as
    the worst possible score (0)."""
    from lossbench.analysis.stats import expected_max_curve

    out, seen = [], set()
    for s in protocol.strategies.values():
        key = (dataset, model, s.tuning_key)
        if s.lr != "tuned" or key not in chosen or s.tuning_key in seen:
            continue
        seen.add(s.tuning_key)
        scores = [0.0 if math.isinf(v) else v for _, v in sorted(chosen[key]["scores"].items())]
        out.append((s.label.split(",")[0], expected_max_curve(scores)))
    return out


def budget_table(protocol: Protocol, chosen: dict, dataset: str, model: str) -> list[str]:
    curves = budget_curves(protocol, chosen, dataset, model)
    if not curves:
        return []
    trials = len(curves[0][1]["n"])
    marks = sorted({1, min(3, trials), trials})
    title = METRICS.get(protocol.select_by, (protocol.select_by,))[0]
    lines = [f"Expected best {title} for a budget of n tuning trials (Dodge et al. 2019; 95% bootstrap band). "
             "Equal budgets: every tuned strategy had the same trials (rates) of the same search space, so a loss "
             "that wins only with many trials was merely easier to tune with few:", "",
             "| strategy | " + " | ".join(f"n = {n}" for n in marks) + " |", "|---|" + "---:|" * len(marks)]
    for label, curve in curves:
        cells = [f"{fmt(protocol.select_by, curve['mean'][n - 1])} [{fmt(protocol.select_by, curve['low'][n - 1])}, "
                 f"{fmt(protocol.select_by, curve['high'][n - 1])}]" for n in marks]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def curve_plot(protocol: Protocol, curves: dict, dataset: str):
    """Validation ``select_by`` per epoch, mean ± std over seeds, one panel per model."""
    panels = [m for m in protocol.models if f"{dataset}/{m}" in curves]
    if not panels:
        return None
    labels = [s.label for s in protocol.strategies.values()]
    figs = []
    for model in panels:
        per_strategy = curves[f"{dataset}/{model}"]
        runs = [[{protocol.select_by: {int(e): v for e, v in run.items()}} for run in per_strategy.get(name, [])]
                for name in protocol.strategies]
        figs.append(plots.plot_curves(labels, runs, [protocol.select_by],
                                      f"{DATASET_TITLES.get(dataset, dataset)}, {model}: validation per epoch "
                                      "(mean ± std over seeds)"))
    return figs


def goal_lines(checks: list[dict]) -> list[str]:
    if not checks:
        return []
    lines = ["Convergence check (the accuracy the forum's setting reaches; the protocol's epochs must get there):", ""]
    for c in checks:
        state = "reached" if c["met"] else "**not reached**"
        lines.append(f"- {c['setting']}: best mean test accuracy {c['mean'] * 100:.2f} % ({c['strategy']}), "
                     f"goal ≥ {c['goal'] * 100:.1f} %: {state}")
    return [*lines, ""]


def runs_csv(rows: list[dict]) -> str:
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k.startswith("test/") or k.startswith("val/"), k))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def context_lines(protocol: Protocol, rows: list[dict], chosen: dict, context: dict[str, Any]) -> list[str]:
    commit = context.get("git_commit") or "unknown (the checkout it ran in had no git metadata)"
    lines = [f"- command: `{context['command']}`", f"- machine: {context['machine']}",
             f"- date (UTC): {context['date']}", f"- lossbench commit: {commit}"]
    if context.get("wall_time_s") is not None:
        parts = [f"{duration(context['wall_time_s'])} ({context['wall_time_s']} s) from start to report",
                 f"{context['trained_now']} runs trained by this command, {context['jobs']} at a time"
                 + (f" with {context['threads']} torch thread(s) each" if context.get("threads") else "")]
        if context.get("cpu_time_s") is not None:
            parts.append(f"{context['cpu_time_s']:.0f} CPU seconds (user + system, all processes)")
        if context.get("load_average"):
            parts.append(f"load average (1 min) {context['load_average']['start']} at the start, "
                         f"{context['load_average']['end']} at the end")
        lines.append("- wall time: " + "; ".join(parts))
    seeds = protocol.seeds
    seed_text = f"seeds {seeds[0]}–{seeds[-1]} ({len(seeds)})" if seeds == list(range(seeds[0], seeds[-1] + 1)) \
        and len(seeds) > 3 else f"seeds {seeds}"
    lines.append(f"- runs: {len(rows)} seed runs + {sum(len(v['scores']) for v in chosen.values())} tuning runs; "
                 f"{seed_text}; rates chosen by final {protocol.select_by} with seed {protocol.tune_seed}"
                 + ("; each setting's seeds trained together as members (`lossbench.members`)"
                    if context.get("members") else ""))
    if protocol.lr_search:
        space = "; ".join(f"{opt}: {s['trials']} rates log-uniform in [{s['low']:g}, {s['high']:g}] "
                          f"({', '.join(fmt_lr(r) for r in protocol.lr_grid[opt])})"
                          for opt, s in protocol.lr_search.items())
        lines.append(f"- tuning budget, equal for every tuned strategy of an optimizer: {space}; "
                     f"drawn once with seed {protocol.search_seed}")
    lines.append(f"- training settings: `configs/experiment/reproduce_{protocol.preset}.yaml`"
                 + (f", profile `{protocol.profile}` (its `reproduce.{protocol.profile}` keys)"
                    if protocol.profile != "full" else "")
                 + (f" + `{' '.join(protocol.overrides)}`" if protocol.overrides else ""))
    extra = {**protocol.datasets, **protocol.models}
    lines.append("- per dataset / model overrides: " + ("; ".join(f"{name}: `{' '.join(o)}`"
                                                              for name, o in extra.items() if o)
                                                    if any(extra.values()) else "none"))
    if context.get("reanalysed"):
        r = context["reanalysed"]
        lines.append(f"- statistics recomputed without retraining: `{r['command']}` on {r['date']} "
                     f"(lossbench commit {r['git_commit'] or 'unknown'}) from this folder's `results.json`")
    return lines


def write_report(protocol: Protocol, rows: list[dict], chosen: dict, results: list[dict],
                 ranks: dict[str, Any] | None, out: Path, context: dict[str, Any], alpha: float = ALPHA) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "runs.csv", lambda tmp: Path(tmp).write_text(runs_csv(rows)))
    tuning = [{"dataset": k[0], "model": k[1], "overrides": list(k[2][0]), "optimizer": k[2][1], "chosen_lr": v["lr"],
               "scores": {fmt_lr(lr): (None if math.isinf(s) else s) for lr, s in v["scores"].items()}}
              for k, v in chosen.items()]
    serial = [{**r, "detectable": None if r.get("detectable") is None or math.isinf(r["detectable"])
               else r["detectable"]} for r in results]
    from lossbench.analysis.reproduce.results import goal_checks

    write_json_atomic(out / "results.json", {**context, "alpha": alpha, "power": POWER, "tuning": tuning,
                                             "comparisons": serial, "ranks": ranks, "runs": rows,
                                             "goals": goal_checks(protocol, rows)})
    pictures = write_plots(protocol, rows, results, ranks, out)
    curves = context.get("curves") or {}
    for dataset in protocol.datasets:
        for i, fig in enumerate(curve_plot(protocol, curves, dataset) or []):
            if fig is not None:
                name = f"validation_{dataset}_{list(protocol.models)[i]}.png"
                plots.save_figure(fig, out / name)
                pictures.append(name)
    budget_panels = [(f"{DATASET_TITLES.get(d, d)}, {m}", budget_curves(protocol, chosen, d, m))
                     for d in protocol.datasets for m in protocol.models]
    scale = METRICS.get(protocol.select_by, (protocol.select_by, 1))[1]
    budget_panels = [(title, [(label, {k: v if k == "n" else [x * scale for x in v] for k, v in curve.items()})
                              for label, curve in c]) for title, c in budget_panels if c]
    if budget_panels and protocol.lr_search:
        plots.save_figure(plots.plot_tuning_budget(budget_panels, METRICS.get(protocol.select_by,
                                                                              (protocol.select_by,))[0]),
                          out / "tuning_budget.png")
        pictures.append("tuning_budget.png")
    from lossbench.analysis.reproduce.results import goal_checks

    checks = goal_checks(protocol, rows)

    md = [f"# {protocol.title}", "", protocol.claim_text, "", *context_lines(protocol, rows, chosen, context),
          statistics_text(results, alpha)]
    if protocol.missing:
        md.append("- not in this checkout, so not run: " + "; ".join(protocol.missing))
    if context.get("repeat_check"):
        md.append(f"- repeatability: {context['repeat_check']['text']}")
    md.append("")
    for dataset in protocol.datasets:
        for model in protocol.models:
            md += [f"## {DATASET_TITLES.get(dataset, dataset)}, {model}", ""]
            tune = tuning_table(protocol, chosen, dataset, model)
            if tune:
                md += ["Rate tuning (validation split):", "", *tune, ""]
            budget = budget_table(protocol, chosen, dataset, model) if protocol.lr_search else []
            if budget:
                md += [*budget, ""]
            md += [*strategy_table(protocol, rows, dataset, model), "",
                   *comparison_table(results, dataset, model), ""]
    md += goal_lines(checks)
    md += ["## Ranks across settings", "", *rank_lines(ranks, protocol)]
    md += ["## Plots", ""] + [f"![{p}]({p})" for p in pictures] + [""]
    md += ["Files: `runs.csv` (one row per seed run, every test metric), `results.json` (the same plus the "
           "tuning scores, every test statistic, the Holm-adjusted p-values and the ranks).", ""]
    path = out / "report.md"
    write_atomic(path, lambda tmp: Path(tmp).write_text("\n".join(md)))
    return path
