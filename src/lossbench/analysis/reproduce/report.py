"""The reproduction's report: ``report.md`` (tables per dataset/model[/setting] block, the family and the
verdicts), ``runs.csv`` (one row per seed run), ``results.json`` (the same plus tuning scores and every
statistic) and PNG plots (``lossbench.analysis.plots``; with settings also the metric against the noise
rate per strategy, ``noise_rates.png``)."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Any

from lossbench.analysis import plots
from lossbench.analysis.reproduce.protocol import Protocol, Strategy
from lossbench.analysis.stats import ALPHA, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, EXACT_MAX_N, POWER, mean_std
from lossbench.summary import write_atomic, write_json_atomic

# the files of a reproduction report folder besides its Markdown and plots (--reanalyse reads RESULTS_FILE)
RESULTS_FILE = "results.json"
RUNS_FILE = "runs.csv"

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


def block_title(protocol: Protocol, dataset: str, model: str, setting: str = "") -> str:
    title = f"{DATASET_TITLES.get(dataset, dataset)}, {model}"
    return title + (f", {protocol.settings[setting].label}" if setting else "")


def strategy_table(protocol: Protocol, rows: list[dict], dataset: str, model: str, setting: str = "") -> list[str]:
    from lossbench.analysis.reproduce.results import select

    metrics = protocol.table_metrics_for(dataset)
    heads = [METRICS.get(m, (m,))[0] for m in metrics]
    lines = ["| strategy | optimizer | rate | " + " | ".join(heads) + " |",
             "|---|---|---|" + "---:|" * len(heads)]
    for s in protocol.strategies_for(dataset):
        sel = select(rows, dataset, model, s.name, setting)
        if not sel:
            continue
        cells = []
        for metric in metrics:
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


def tuning_table(protocol: Protocol, chosen: dict, dataset: str, model: str, setting: str = "") -> list[str]:
    select_by = protocol.select_for(dataset)
    entries = [(s, chosen[(dataset, model, setting, s.tuning_key)]) for s in protocol.strategies_for(dataset)
               if s.lr == "tuned" and (dataset, model, setting, s.tuning_key) in chosen]
    seen, lines = set(), []
    for s, c in entries:
        if s.tuning_key in seen:
            continue
        seen.add(s.tuning_key)
        scores = ", ".join(("**" if lr == c["lr"] else "") + f"{fmt_lr(lr)}: " +
                           ("diverged" if math.isinf(v) else fmt(select_by, v)) +
                           ("**" if lr == c["lr"] else "") for lr, v in sorted(c["scores"].items()))
        lines.append(f"| {tuned_label(s)} | {s.optimizer} | {scores} |")
    if not lines:
        return []
    title = METRICS.get(select_by, (select_by,))[0]
    return [f"| loss | optimizer | {title} at each rate (chosen in bold) |", "|---|---|---|", *lines]


COMPARISON_HEADER = ("| claim (a vs b) | metric | mean a − b | 95% CI (t) | 95% CI (bootstrap) | d_z | t-test p | "
                     "Wilcoxon p | t p, Holm | Wilcoxon p, Holm | direction t / W | verdict | detectable (80% power) |")


def comparison_table(results: list[dict], dataset: str, model: str, setting: str = "") -> list[str]:
    lines = [COMPARISON_HEADER, "|---|---|---:|---|---|---:|---:|---:|---:|---:|---|---|---:|"]
    arrows = {1: "a > b", -1: "a < b", 0: "–"}
    for r in results:
        if (r["dataset"], r["model"], r.get("setting", "")) != (dataset, model, setting):
            continue
        title = METRICS.get(r["metric"], (r["metric"],))[0]
        if r.get("drop_from"):  # a and b are per-seed drops from the reference setting
            title = f"drop in {title} from {r['drop_from']}"
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
    scales: dict[str, list[str]] = {}  # "integer counts (× 1/N)" -> the datasets tested on that scale
    for r in done:
        if r["on"] != "values" and r["dataset"] not in scales.setdefault(r["on"], []):
            scales[r["on"]].append(r["dataset"])
    integer = ([f"{on} on {', '.join(datasets)}" for on, datasets in scales.items()] if len(scales) > 1
               else list(scales))
    return (f"- statistics (`lossbench/analysis/stats.py`, `docs/statistics.md`): mean ± sample std over seeds; "
            f"per-seed paired differences a − b with a Student-t 95% CI and a percentile bootstrap 95% CI "
            f"({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}); Cohen's d_z; two-sided paired t-test and "
            f"Wilcoxon signed-rank test (exact distribution for ≤ {EXACT_MAX_N} non-zero differences, zeros "
            f"dropped, midranks for ties; its direction from W+ vs W−). "
            + (f"Accuracies and counts are tested as {', '.join(integer)}, so equal counts tie exactly. "
               if integer else "")
            + ("Comparisons marked *drop in … from <setting>* test per-seed drops: a seed's value in the reference "
               "setting minus its value in the block (seeds are paired across settings too: the same initial "
               "weights and batch order, other training labels), drop of a against drop of b. "
               if any(r.get("drop_from") for r in done) else "")
            + f"**Family: {family}**, separately for the t-test and the Wilcoxon p-values. Verdict on the stated "
            f"claim: *supported* when both Holm-adjusted p < {alpha:g} and both tests point the claim's way, "
            f"*contradicted* when both are < {alpha:g} and point the other way, else *no significant difference*. "
            f"Detectable: the smallest |a − b| the paired t-test finds with {POWER:.0%} power at "
            f"α/m = {alpha:g}/{m} = {alpha / m:.2g} from the observed spread; *none* where the Wilcoxon test "
            f"cannot reach α/m with this many seeds (its smallest p is 2/2ⁿ).")


def rank_lines(ranks: dict[str, Any] | None, protocol: Protocol) -> list[str]:
    what = "dataset/model/setting blocks" if protocol.settings else "dataset/model settings"
    if ranks is None:
        settings = len(protocol.blocks())
        unit = "dataset/model/setting block(s)" if protocol.settings else "dataset/model setting(s)"
        return [f"Ranks across settings: not computed ({settings} {unit}; the Friedman "
                "test here needs at least 3 settings and 3 strategies).", ""]
    labels = {n: protocol.strategies[n].label for n in ranks["strategies"]}
    title = METRICS.get(ranks["metric"], (ranks["metric"],))[0]
    lines = [f"Mean rank on {title} (mean over seeds per setting; 1 = best) over the {len(ranks['settings'])} "
             f"{what}:", "",
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


def dataset_metric(protocol: Protocol, dataset: str) -> str | None:
    """The metric of the first comparison made on ``dataset`` (the protocol's first without settings)."""
    if not protocol.settings:
        return protocol.comparisons[0]["metric"] if protocol.comparisons else None
    return next((c["metric"] for setting in protocol.settings_for(dataset)
                 for c in protocol.comparisons_for(dataset, setting)), None)


def per_seed_plot(protocol: Protocol, rows: list[dict], dataset: str):
    metric = dataset_metric(protocol, dataset)
    scale = METRICS.get(metric, (metric, 1))[1]
    names = [s.name for s in protocol.strategies_for(dataset)]
    panels = []
    for model in protocol.models:
        for setting in protocol.settings_for(dataset):
            by_seed = {}
            for seed in protocol.seeds:
                by_seed[seed] = [next((float(r[metric]) * scale for r in rows
                                       if (r["dataset"], r["model"], r["strategy"], int(r["seed"]), r.get("setting", ""))
                                       == (dataset, model, name, seed, setting) and r.get(metric) not in (None, "")),
                                      None) for name in names]
            panels.append((block_title(protocol, dataset, model, setting), names, by_seed))
    return plots.plot_per_seed(panels, METRICS.get(metric, (metric,))[0])


def write_plots(protocol: Protocol, rows: list[dict], results: list[dict], ranks: dict | None,
                out: Path) -> list[str]:
    files = []
    if protocol.comparisons:
        for dataset in protocol.datasets:
            if dataset_metric(protocol, dataset) is None:
                continue
            plots.save_figure(per_seed_plot(protocol, rows, dataset), out / f"per_seed_{dataset}.png")
            files.append(f"per_seed_{dataset}.png")
    done = [r for r in results if "verdict" in r]
    if done:
        entries = []
        for r in done:
            s, t = METRICS.get(r["metric"], (r["metric"], 1))[1], r["test"]
            block = "/".join(x for x in (r["dataset"], r["model"], r.get("setting")) if x)
            entries.append({"label": f"{block}: {r['label']} [{METRICS.get(r['metric'], (r['metric'],))[0]}]",
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


def budget_curves(protocol: Protocol, chosen: dict, dataset: str, model: str, setting: str = ""
                  ) -> list[tuple[str, dict]]:
    """(strategy label, expected-max curve) for each tuned strategy of a setting; a diverged trial counts as
    the worst possible score (0)."""
    from lossbench.analysis.stats import expected_max_curve

    out, seen = [], set()
    for s in protocol.strategies_for(dataset):
        key = (dataset, model, setting, s.tuning_key)
        if s.lr != "tuned" or key not in chosen or s.tuning_key in seen:
            continue
        seen.add(s.tuning_key)
        scores = [0.0 if math.isinf(v) else v for _, v in sorted(chosen[key]["scores"].items())]
        out.append((tuned_label(s), expected_max_curve(scores)))
    return out


def tuned_label(strategy: Strategy) -> str:
    """A tuned strategy's label without its ", tuned rate" ending: one row per tuning, named by everything that
    sets it apart (label smoothing, optimizer), not only by its loss."""
    return re.sub(r",\s*tuned rate$", "", strategy.label)


def budget_table(protocol: Protocol, chosen: dict, dataset: str, model: str, setting: str = "") -> list[str]:
    curves = budget_curves(protocol, chosen, dataset, model, setting)
    if not curves:
        return []
    trials = len(curves[0][1]["n"])
    marks = sorted({1, min(3, trials), trials})
    select_by = protocol.select_for(dataset)
    title = METRICS.get(select_by, (select_by,))[0]
    lines = [f"Expected best {title} for a budget of n tuning trials (Dodge et al. 2019; 95% bootstrap band). "
             "Equal budgets: every tuned strategy had the same trials (rates) of the same search space, so a loss "
             "that wins only with many trials was merely easier to tune with few:", "",
             "| strategy | " + " | ".join(f"n = {n}" for n in marks) + " |", "|---|" + "---:|" * len(marks)]
    for label, curve in curves:
        cells = [f"{fmt(select_by, curve['mean'][n - 1])} [{fmt(select_by, curve['low'][n - 1])}, "
                 f"{fmt(select_by, curve['high'][n - 1])}]" for n in marks]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def curve_plot(protocol: Protocol, curves: dict, dataset: str) -> list[tuple[str, object]]:
    """Validation ``select_by`` per epoch, mean ± std over seeds: ``(file name, figure)`` per model (and
    setting)."""
    select_by = protocol.select_for(dataset)
    figs = []
    for model in protocol.models:
        for setting in protocol.settings_for(dataset):
            block = f"{dataset}/{model}" + (f"/{setting}" if setting else "")
            if block not in curves:
                continue
            strategies = protocol.strategies_for(dataset)
            per_strategy = curves[block]
            runs = [[{select_by: {int(e): v for e, v in run.items()}} for run in per_strategy.get(s.name, [])]
                    for s in strategies]
            fig = plots.plot_curves([s.label for s in strategies], runs, [select_by],
                                    f"{block_title(protocol, dataset, model, setting)}: validation per epoch "
                                    "(mean ± std over seeds)")
            figs.append(("validation_" + block.replace("/", "_") + ".png", fig))
    return figs


def noise_rate_plot(protocol: Protocol, rows: list[dict]):
    """Each strategy's test metric (the dataset's first comparison's) against the noise rate, mean ± std over
    seeds, one panel per dataset, model and noise kind; the clean setting (kind ``none``) is rate 0 of every
    panel; a setting without a rate (single positive) sits at its runs' mean realised rate."""
    from lossbench.analysis.reproduce.results import select

    panels = []
    for dataset in protocol.datasets:
        metric = dataset_metric(protocol, dataset)
        if metric is None:
            continue
        scale = METRICS.get(metric, (metric, 1))[1]
        names = protocol.settings_for(dataset)
        clean = [n for n in names if protocol.settings[n].kind == "none"]
        kinds = list(dict.fromkeys(protocol.settings[n].kind for n in names if protocol.settings[n].kind != "none"))
        for model in protocol.models:
            for kind in kinds:
                points = [n for n in names if protocol.settings[n].kind == kind]
                lines = []
                for s in protocol.strategies_for(dataset):
                    xs, means, stds = [], [], []
                    for setting in clean + points:
                        sel = select(rows, dataset, model, s.name, setting)
                        v = [float(r[metric]) * scale for r in sel if r.get(metric) not in (None, "")]
                        if not v:
                            continue
                        rate = protocol.settings[setting].rate
                        if rate is None:
                            realised = [float(r["noise_realised_rate"]) for r in sel
                                        if r.get("noise_realised_rate") not in (None, "")]
                            rate = sum(realised) / len(realised) if realised else float("nan")
                        xs.append(rate * 100)
                        means.append(sum(v) / len(v))
                        stds.append(mean_std(v).std if len(v) > 1 else 0.0)
                    lines.append((s.label, xs, means, stds))
                realised = any(protocol.settings[n].rate is None for n in points)
                xlabel = f"{kind.replace('_', ' ')}: " + ("share of training labels changed, % (realised)"
                                                          if realised else "noise rate, %")
                panels.append((f"{DATASET_TITLES.get(dataset, dataset)}, {model}: {kind.replace('_', ' ')}",
                               xlabel, METRICS.get(metric, (metric,))[0], lines))
    if not panels:
        return None
    return plots.plot_against_rate(panels, "test metric against the training-label noise rate: mean ± std over "
                                           f"{len(protocol.seeds)} seeds (validation and test labels clean)")


def goal_lines(checks: list[dict]) -> list[str]:
    if not checks:
        return []
    lines = ["Convergence check (the accuracy the forum's setting reaches; the protocol's epochs must get there):", ""]
    for c in checks:
        state = "reached" if c["met"] else "**not reached**"
        lines.append(f"- {c['setting']}: best mean test accuracy {c['mean'] * 100:.2f} % ({c['strategy']}), "
                     f"goal ≥ {c['goal'] * 100:.1f} %: {state}")
    return [*lines, ""]


def noise_text(rows: list[dict], dataset: str, model: str, setting: str) -> str:
    """The training labels the block's runs saw, from their summaries: realised rate and fingerprint(s)."""
    sel = [r for r in rows if (r["dataset"], r["model"], r.get("setting")) == (dataset, model, setting)]
    rates = sorted({r.get("noise_realised_rate") for r in sel if r.get("noise_realised_rate") not in (None, "")})
    digests = sorted({r.get("noise_train_labels_sha1") for r in sel if r.get("noise_train_labels_sha1")})
    if not rates:
        return ""
    text = "; realised rate " + ", ".join(f"{float(x) * 100:.2f} %" for x in rates)
    if digests:
        text += (f"; every run of the block trained on the same labels (sha1 {digests[0]})" if len(digests) == 1
                 else f"; **{len(digests)} different training label sets** ({', '.join(digests)})")
    return text


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
    select_text = protocol.select_by if isinstance(protocol.select_by, str) else ", ".join(
        f"{m} ({d})" for d, m in protocol.select_by.items())
    lines.append(f"- runs: {len(rows)} seed runs + {sum(len(v['scores']) for v in chosen.values())} tuning runs; "
                 f"{seed_text}; rates chosen by final {select_text} with seed {protocol.tune_seed}"
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
    if protocol.settings:
        lines.append("- settings (training split only; each its own block of tuning, seeds and comparisons): "
                     + "; ".join(f"{name} = {s.label}: `{' '.join(s.overrides) or 'no overrides'}`"
                                 + (f" ({', '.join(s.datasets)})" if s.datasets else "")
                                 for name, s in protocol.settings.items()))
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
    write_atomic(out / RUNS_FILE, lambda tmp: Path(tmp).write_text(runs_csv(rows)))
    tuning = [{"dataset": k[0], "model": k[1], **({"setting": k[2]} if k[2] else {}), "overrides": list(k[3][0]),
               "optimizer": k[3][1], "chosen_lr": v["lr"],
               "scores": {fmt_lr(lr): (None if math.isinf(s) else s) for lr, s in v["scores"].items()}}
              for k, v in chosen.items()]
    serial = [{**r, "detectable": None if r.get("detectable") is None or math.isinf(r["detectable"])
               else r["detectable"]} for r in results]
    from lossbench.analysis.reproduce.results import goal_checks

    write_json_atomic(out / RESULTS_FILE, {**context, "alpha": alpha, "power": POWER, "tuning": tuning,
                                             "comparisons": serial, "ranks": ranks, "runs": rows,
                                             "goals": goal_checks(protocol, rows)})
    pictures = write_plots(protocol, rows, results, ranks, out)
    curves = context.get("curves") or {}
    if protocol.settings:
        fig = noise_rate_plot(protocol, rows)
        if fig is not None:
            plots.save_figure(fig, out / "noise_rates.png")
            pictures.insert(0, "noise_rates.png")
    for dataset in protocol.datasets:
        for name, fig in curve_plot(protocol, curves, dataset):
            if fig is not None:
                plots.save_figure(fig, out / name)
                pictures.append(name)
    budget_panels = [(block_title(protocol, d, m, setting), protocol.select_for(d),
                      budget_curves(protocol, chosen, d, m, setting)) for d, m, setting in protocol.blocks()]
    budget_panels = [(title, [(label, {k: v if k == "n" else [x * METRICS.get(metric, (metric, 1))[1] for x in v]
                                       for k, v in curve.items()}) for label, curve in c])
                     for title, metric, c in budget_panels if c]
    select_titles = sorted({METRICS.get(protocol.select_for(d), (protocol.select_for(d),))[0] for d in protocol.datasets})
    if budget_panels and protocol.lr_search:
        plots.save_figure(plots.plot_tuning_budget(budget_panels, " / ".join(select_titles)),
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
    for dataset, model, setting in protocol.blocks():
        md += [f"## {block_title(protocol, dataset, model, setting)}", ""]
        if setting:
            md += [f"Setting `{setting}`: `{' '.join(protocol.settings[setting].overrides) or 'no overrides'}`"
                   + noise_text(rows, dataset, model, setting), ""]
        tune = tuning_table(protocol, chosen, dataset, model, setting)
        if tune:
            md += ["Rate tuning (validation split):", "", *tune, ""]
        budget = budget_table(protocol, chosen, dataset, model, setting) if protocol.lr_search else []
        if budget:
            md += [*budget, ""]
        md += [*strategy_table(protocol, rows, dataset, model, setting), ""]
        if any((r["dataset"], r["model"], r.get("setting", "")) == (dataset, model, setting) for r in results):
            md += [*comparison_table(results, dataset, model, setting), ""]
    md += goal_lines(checks)
    md += ["## Ranks across settings", "", *rank_lines(ranks, protocol)]
    md += ["## Plots", ""] + [f"![{p}]({p})" for p in pictures] + [""]
    md += ["Files: `runs.csv` (one row per seed run, every test metric), `results.json` (the same plus the "
           "tuning scores, every test statistic, the Holm-adjusted p-values and the ranks).", ""]
    path = out / "report.md"
    write_atomic(path, lambda tmp: Path(tmp).write_text("\n".join(md)))
    return path
