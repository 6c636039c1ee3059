"""The protocol of a reproduction: ``configs/experiment/reproduce_<preset>.yaml`` under ``reproduce:``,
with ``--profile cpu`` / ``quick`` replacing the keys of its ``reproduce.<profile>`` section."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import OmegaConf

from lossbench.errors import ConfigError
from lossbench.paths import CONFIG_DIR

PRESETS = ("mnist", "multilabel")
PROFILES = ("full", "cpu", "quick")  # full: the protocol as written; cpu / quick: its reproduce.<profile> keys
CLAIM_NAMES = {"mnist": "claim 1", "multilabel": "claim 2"}


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
    )
    drop_unavailable(protocol)
    return protocol


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
