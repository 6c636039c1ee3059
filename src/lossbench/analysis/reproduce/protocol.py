"""The protocol of a reproduction: ``configs/experiment/reproduce_<preset>.yaml`` under ``reproduce:``,
with ``--profile cpu`` / ``quick`` replacing the keys of its ``reproduce.<profile>`` section."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import OmegaConf

from lossbench.errors import ConfigError
from lossbench.paths import CONFIG_DIR

PRESETS = ("mnist", "multilabel", "mnist_converged", "multilabel_converged")
PROFILES = ("full", "cpu", "quick")  # full: the protocol as written; cpu / quick: its reproduce.<profile> keys
CLAIM_NAMES = {"mnist": "claim 1", "multilabel": "claim 2", "mnist_converged": "claim 1",
               "multilabel_converged": "claim 2"}


@dataclass(frozen=True)
class Strategy:
    name: str
    label: str
    overrides: tuple[str, ...]
    optimizer: str
    lr: float | str  # a number, or "tuned"

    @property
    def loss(self) -> str:
        return next(o.split("=", 1)[1] for o in self.overrides if o.startswith("loss="))

    @property
    def tuning_key(self) -> tuple:
        return (self.overrides, self.optimizer)


@dataclass
class Protocol:
    preset: str
    title: str
    claim_text: str
    datasets: dict[str, list[str]]
    models: dict[str, list[str]]
    seeds: list[int]
    tune_seed: int
    select_by: str
    lr_grid: dict[str, list[float]]
    strategies: dict[str, Strategy]
    table_metrics: list[str]
    comparisons: list[dict[str, str]]
    profile: str = "full"
    overrides: list[str] = field(default_factory=list)  # extra training overrides of the profile
    missing: list[str] = field(default_factory=list)  # what this checkout lacks, reported as such
    # random search (equal budgets): optimizer -> {low, high, trials}; lr_grid holds the sampled rates
    lr_search: dict[str, dict] | None = None
    search_seed: int = 0
    goals: dict[str, float] = field(default_factory=dict)  # "<dataset>/<model>" -> accuracy the best must reach

    @property
    def claim_name(self) -> str:
        return CLAIM_NAMES.get(self.preset, self.preset)


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
    strategies: dict[str, Strategy] = {}
    for name, s in (spec.get("strategies") or {}).items():
        strategies[name] = Strategy(name, s["label"], tuple(s["overrides"]), s["optimizer"], s["lr"])
    for loss, s in (spec.get("losses") or {}).items():
        for opt in spec["optimizers"]:
            name = f"{loss}+{opt}"
            strategies[name] = Strategy(name, s["label"], tuple(s["overrides"]), opt, "tuned")
    protocol = Protocol(
        preset=preset, title=spec["title"], claim_text=spec.get("claim_text", ""), datasets=spec["datasets"],
        models=spec["models"], seeds=list(spec["seeds"]), tune_seed=spec["tune_seed"],
        select_by=spec["select_by"], lr_grid=spec["lr_grid"], strategies=strategies,
        table_metrics=spec["table_metrics"], comparisons=spec["comparisons"], profile=profile,
        overrides=list(spec.get("overrides", [])) if profile != "full" else [],
        lr_search=spec.get("lr_search"), search_seed=int(spec.get("search_seed", 0)), goals=spec.get("goals") or {},
    )
    if protocol.lr_search:
        protocol.lr_grid = {**protocol.lr_grid, **sampled_rates(protocol.lr_search, protocol.search_seed)}
    drop_unavailable(protocol)
    return protocol


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
    """Datasets and losses other engineers have not landed yet are left out and listed as missing."""
    from lossbench import data, losses

    for name in list(protocol.datasets):
        if name not in data.available():
            protocol.missing.append(f"dataset {name} (not in this checkout's lossbench.data)")
            del protocol.datasets[name]
    for name, s in list(protocol.strategies.items()):
        if s.loss not in losses.available():
            protocol.missing.append(f"strategy {name} (loss {s.loss} not in this checkout's lossbench.losses)")
            del protocol.strategies[name]
