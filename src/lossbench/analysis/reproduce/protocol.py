"""The protocol of a reproduction: ``configs/experiment/reproduce_<preset>.yaml`` under ``reproduce:``,
with ``--profile cpu`` / ``quick`` replacing the keys of its ``reproduce.<profile>`` section.

A protocol crosses datasets x models x (optional) ``settings``: named sets of training overrides such as
``[noise=symmetric, noise.rate=0.4]``. Each (dataset, model, setting) is a block of its own: its own tuning
(the same budget for every tuned strategy), its seeds, comparisons and report section. ``datasets:`` on a
setting or a strategy limits it to those datasets (the single-label noise kinds and losses of claim 3 run on
MNIST, the multi-label ones on mnist_multi). A protocol without ``settings`` has one unnamed setting
(``""``), and its jobs, rows and results are what they were before settings existed."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import OmegaConf

from lossbench.errors import ConfigError
from lossbench.paths import CONFIG_DIR

PRESETS = ("mnist", "multilabel", "mnist_converged", "multilabel_converged", "noise")
PROFILES = ("full", "cpu", "quick")  # full: the protocol as written; cpu / quick: its reproduce.<profile> keys
CLAIM_NAMES = {"mnist": "claim 1", "multilabel": "claim 2", "mnist_converged": "claim 1",
               "multilabel_converged": "claim 2", "noise": "claim 3"}


@dataclass(frozen=True)
class Strategy:
    name: str
    label: str
    overrides: tuple[str, ...]
    optimizer: str
    lr: float | str  # a number, or "tuned"
    datasets: tuple[str, ...] | None = None  # the datasets it runs on; None: every dataset

    def runs_on(self, dataset: str) -> bool:
        return self.datasets is None or dataset in self.datasets

    @property
    def loss(self) -> str:
        return next(o.split("=", 1)[1] for o in self.overrides if o.startswith("loss="))

    @property
    def tuning_key(self) -> tuple:
        return (self.overrides, self.optimizer)


@dataclass(frozen=True)
class Setting:
    """A named set of training overrides (``noise=...``), crossed with the datasets it runs on. ``kind`` and
    ``rate`` place it in the plot against the noise rate (``rate`` None: the runs' mean realised rate)."""

    name: str
    label: str
    overrides: tuple[str, ...]
    datasets: tuple[str, ...] | None = None
    kind: str = "none"
    rate: float | None = 0.0

    def runs_on(self, dataset: str) -> bool:
        return self.datasets is None or dataset in self.datasets


@dataclass
class Protocol:
    preset: str
    title: str
    claim_text: str
    datasets: dict[str, list[str]]
    models: dict[str, list[str]]
    seeds: list[int]
    tune_seed: int
    select_by: str | dict[str, str]  # one validation metric, or dataset -> metric
    lr_grid: dict[str, list[float]]
    strategies: dict[str, Strategy]
    table_metrics: list[str] | dict[str, list[str]]  # one list, or dataset -> list
    comparisons: list[dict[str, str]]
    profile: str = "full"
    overrides: list[str] = field(default_factory=list)  # extra training overrides of the profile
    missing: list[str] = field(default_factory=list)  # what this checkout lacks, reported as such
    # random search (equal budgets): optimizer -> {low, high, trials}; lr_grid holds the sampled rates
    lr_search: dict[str, dict] | None = None
    search_seed: int = 0
    goals: dict[str, float] = field(default_factory=dict)  # "<dataset>/<model>" -> accuracy the best must reach
    settings: dict[str, Setting] = field(default_factory=dict)  # empty: one unnamed setting ""

    @property
    def claim_name(self) -> str:
        return CLAIM_NAMES.get(self.preset, self.preset)

    def select_for(self, dataset: str) -> str:
        """The validation metric that picks ``dataset``'s learning rates."""
        return self.select_by if isinstance(self.select_by, str) else self.select_by[dataset]

    def table_metrics_for(self, dataset: str) -> list[str]:
        return self.table_metrics if isinstance(self.table_metrics, list) else self.table_metrics[dataset]

    def settings_for(self, dataset: str) -> list[str]:
        """The names of the settings run on ``dataset``; ``[""]`` for a protocol without settings."""
        if not self.settings:
            return [""]
        return [name for name, s in self.settings.items() if s.runs_on(dataset)]

    def strategies_for(self, dataset: str) -> list[Strategy]:
        return [s for s in self.strategies.values() if s.runs_on(dataset)]

    def blocks(self) -> list[tuple[str, str, str]]:
        """Every (dataset, model, setting), in protocol order."""
        return [(d, m, s) for d in self.datasets for m in self.models for s in self.settings_for(d)]

    def setting_overrides(self, setting: str) -> list[str]:
        return list(self.settings[setting].overrides) if setting else []

    def comparisons_for(self, dataset: str, setting: str) -> list[dict]:
        """The comparisons made in one block: both strategies run on the dataset, the block's setting is
        one the comparison lists (``settings:``, default all) and not its own reference (``drop_from``)."""
        out = []
        for comp in self.comparisons:
            names = (comp["a"], comp["b"])
            if any(n in self.strategies and not self.strategies[n].runs_on(dataset) for n in names):
                continue
            if self.settings and (setting not in comp.get("settings", self.settings) or setting == comp.get("drop_from")):
                continue
            if comp.get("drop_from") and comp["drop_from"] not in self.settings_for(dataset):
                continue
            out.append(comp)
        return out


def load_protocol(preset: str, quick: bool = False, profile: str | None = None) -> Protocol:
    """The protocol of ``preset``; ``profile`` cpu/quick (``quick=True`` is ``profile="quick"``) replaces
    the keys its ``reproduce.<profile>`` section gives."""
    profile = profile or ("quick" if quick else "full")
    if preset not in PRESETS:
        raise ConfigError(f"preset {preset!r} is unknown; available: {', '.join(PRESETS)}")
    if profile not in PROFILES:
        raise ConfigError(f"--profile={profile!r} is invalid; allowed: {', '.join(PROFILES)}")
    spec = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "experiment" / f"reproduce_{preset}.yaml").reproduce)
    if profile != "full":
        spec.update(spec.get(profile, {}))
        names = set(spec.get("strategies") or {}) | {f"{lo}+{o}" for lo in spec.get("losses") or {}
                                                     for o in spec.get("optimizers") or []}
        spec["comparisons"] = [c for c in spec["comparisons"] if {c["a"], c["b"]} <= names]
        if spec.get("settings"):  # a smaller profile keeps the comparisons of the settings it still has
            spec["comparisons"] = kept_comparisons(spec["comparisons"], set(spec["settings"]))
    strategies: dict[str, Strategy] = {}
    for name, s in (spec.get("strategies") or {}).items():
        strategies[name] = Strategy(name, s["label"], tuple(s["overrides"]), s["optimizer"], s["lr"],
                                    tuple(s["datasets"]) if s.get("datasets") is not None else None)
    for loss, s in (spec.get("losses") or {}).items():
        for opt in spec["optimizers"]:
            name = f"{loss}+{opt}"
            strategies[name] = Strategy(name, s["label"], tuple(s["overrides"]), opt, "tuned")
    settings = {name: Setting(name, s["label"], tuple(s.get("overrides") or ()),
                              tuple(s["datasets"]) if s.get("datasets") is not None else None,
                              s.get("kind", "none"), None if s.get("rate", 0.0) is None else float(s.get("rate", 0.0)))
                for name, s in (spec.get("settings") or {}).items()}
    for comp in spec["comparisons"]:
        for name in [*comp.get("settings", []), *([comp["drop_from"]] if comp.get("drop_from") else [])]:
            if name not in settings:
                raise ConfigError(f"comparison {comp['label']!r}: setting {name!r} is not one of the protocol's "
                                  f"settings; available: {', '.join(settings) or 'none'}")
    protocol = Protocol(
        preset=preset, title=spec["title"], claim_text=spec.get("claim_text", ""), datasets=spec["datasets"],
        models=spec["models"], seeds=list(spec["seeds"]), tune_seed=spec["tune_seed"],
        select_by=spec["select_by"], lr_grid=spec["lr_grid"], strategies=strategies,
        table_metrics=spec["table_metrics"], comparisons=spec["comparisons"], profile=profile,
        overrides=list(spec.get("overrides", [])) if profile != "full" else [],
        lr_search=spec.get("lr_search"), search_seed=int(spec.get("search_seed", 0)), goals=spec.get("goals") or {},
        settings=settings,
    )
    if protocol.lr_search:
        protocol.lr_grid = {**protocol.lr_grid, **sampled_rates(protocol.lr_search, protocol.search_seed)}
    drop_unavailable(protocol)
    return protocol


def kept_comparisons(comparisons: list[dict], kept: set[str]) -> list[dict]:
    """The comparisons whose reference (``drop_from``) and some listed setting are among ``kept``."""
    out = []
    for c in comparisons:
        if c.get("drop_from") and c["drop_from"] not in kept:
            continue
        if "settings" in c:
            c = {**c, "settings": [n for n in c["settings"] if n in kept]}
            if not c["settings"]:
                continue
        out.append(c)
    return out


def sampled_rates(search: dict[str, dict], seed: int) -> dict[str, list[float]]:
    """Equal tuning budgets: per optimizer, ``trials`` learning rates drawn log-uniformly from
    ``[low, high]`` with ``numpy.random.default_rng(seed)`` (3 significant digits). Every strategy that
    uses the optimizer is tuned over these same trials, so no strategy gets more or luckier draws."""
    import numpy as np

    rates = {}
    for optimizer, s in search.items():
        rng = np.random.default_rng([seed, sum(map(ord, optimizer))])
        draws = np.exp(rng.uniform(np.log(float(s["low"])), np.log(float(s["high"])), size=int(s["trials"])))
        rates[optimizer] = sorted(float(f"{r:.3g}") for r in draws)
        if len(set(rates[optimizer])) != len(rates[optimizer]):
            raise ConfigError(f"lr_search.{optimizer}: two of its {s['trials']} trials round to the same rate; "
                              "allowed: a wider range or fewer trials")
    return rates


def drop_unavailable(protocol: Protocol) -> None:
    """Datasets and losses missing from this checkout are left out and listed as missing."""
    from lossbench import data, losses

    for name in list(protocol.datasets):
        if name not in data.available():
            protocol.missing.append(f"dataset {name} (not in this checkout's lossbench.data)")
            del protocol.datasets[name]
    for name, s in list(protocol.strategies.items()):
        if s.loss not in losses.available():
            protocol.missing.append(f"strategy {name} (loss {s.loss} not in this checkout's lossbench.losses)")
            del protocol.strategies[name]
