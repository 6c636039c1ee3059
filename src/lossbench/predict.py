"""Predict with a trained run: probabilities and decisions for new inputs.

    python -m lossbench.predict RUN_DIR INPUT [INPUT ...] [--rule RULE ...] [--format json|csv] [--out FILE]

``RUN_DIR`` is a run directory (``summary.json``, ``thresholds.json``, ``checkpoints/last.ckpt``).
``INPUT`` is one ``.pt`` file holding a tensor ``(N, *input_shape)`` in the dataset's own units
(uint8 pixels 0-255 for image datasets, raw features for synthetic data), or image files (PNG/JPEG),
decoded with torchvision and converted to the run's input shape (grayscale 28x28 for MNIST).
``--rule`` picks decision rules (repeatable, ``all`` for every one); the default is the run's
headline rule from ``thresholds.json``. From Python::

    predictor = load_run("runs/synthetic-sigmoid-bce_with_logits-seed0/2026-...")
    out = predictor.predict(x, rule="per_class")   # out.probabilities, out.decisions["per_class"]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lossbench.decisions import SINGLE_LABEL_RULE, DecisionRules, raw_outputs
from lossbench.errors import ConfigError, DataError, UserError
from lossbench.paths import CHECKPOINT, THRESHOLDS_FILE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
BATCH_SIZE = 1024


@dataclass
class Prediction:
    probabilities: torch.Tensor  # (N, C)
    decisions: dict[str, torch.Tensor]  # rule -> (N, C) 0/1 (multi-label) or (N,) class indices (argmax)


class Predictor:
    """A trained ``LossModule`` with its run's decision rules."""

    def __init__(self, module: Any, rules_file: dict[str, Any], device: str | torch.device = "cpu") -> None:
        self.module = module.eval()
        self.device = torch.device(device)
        self.task = module.task
        self.input_shape = tuple(module.hparams.input_shape)
        self.classes: list[str] = list(rules_file["classes"])
        self.headline: str = rules_file["headline"]
        self.rules = (DecisionRules.from_json(rules_file, module.head) if self.task == "multilabel" else None)
        self.rule_names: tuple[str, ...] = self.rules.names if self.rules else (SINGLE_LABEL_RULE,)

    def resolve_rules(self, rule: str | list[str] | None) -> list[str]:
        """``None`` -> the headline rule; ``"all"`` -> every rule; else the named ones."""
        if rule is None:
            return [self.headline]
        names = [rule] if isinstance(rule, str) else list(rule)
        if "all" in names:
            return list(self.rule_names)
        for name in names:
            if name not in self.rule_names:
                raise ConfigError(f"rule {name!r} is not available for this run; allowed: all, "
                                  f"{', '.join(self.rule_names)}")
        return names

    def check_inputs(self, x: torch.Tensor) -> None:
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise DataError(f"inputs have shape {tuple(x.shape)}; this run expects (N, "
                            f"{', '.join(map(str, self.input_shape))})")

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Raw model outputs (class scores, plus the partition head's count output)."""
        self.check_inputs(x)
        return raw_outputs(self.module, x, BATCH_SIZE, self.device)

    def predict(self, x: torch.Tensor, rule: str | list[str] | None = None) -> Prediction:
        names = self.resolve_rules(rule)
        raw = self.raw(x)
        head = self.module.head
        decisions = {name: self.rules.decide(raw, name) if self.rules else head.decide(raw, self.task)
                     for name in names}
        return Prediction(head.probabilities(raw, self.task), decisions)

    def labels(self, decisions: torch.Tensor) -> list[Any]:
        """Class names: one per sample (argmax) or a list per sample (multi-label)."""
        if decisions.ndim == 1:
            return [self.classes[i] for i in decisions.tolist()]
        return [[self.classes[c] for c in row.nonzero().flatten().tolist()] for row in decisions]


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """Load ``RUN_DIR/checkpoints/last.ckpt`` and ``RUN_DIR/thresholds.json``."""
    from lossbench.module import LossModule

    run_dir = Path(run_dir)
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device!r} is not a torch device; e.g. cpu, cuda, cuda:1") from None
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run directory")
    checkpoint, rules_path = run_dir / CHECKPOINT, run_dir / THRESHOLDS_FILE
    if not checkpoint.is_file():
        raise DataError(f"{checkpoint}: no checkpoint; the run must have trained with trainer.checkpoint=true")
    if not rules_path.is_file():
        raise DataError(f"{rules_path}: missing; it is written when a run finishes its test")
    try:
        module = LossModule.load_from_checkpoint(checkpoint, map_location=device, weights_only=True,
                                                 **weights_from_checkpoint(checkpoint))
    except (RuntimeError, OSError, KeyError, EOFError, pickle.UnpicklingError) as err:
        # UnpicklingError: weights-only loading refused what the file would run (pickled code)
        from lossbench.resume import load_error_reason

        raise DataError(f"{checkpoint}: cannot load ({load_error_reason(err)})") from None
    return Predictor(module, json.loads(rules_path.read_text()), device)


def weights_from_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """Hyperparameter overrides so that rebuilding the model fetches nothing: a ``model.pretrained=true``
    run's weights are all in the checkpoint (``model=timm``), so the rebuilt model starts from scratch."""
    try:
        hparams = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True).get("hyper_parameters", {})
    except (RuntimeError, OSError, EOFError, AttributeError):
        return {}  # load_from_checkpoint reports the unreadable file
    model = hparams.get("model") or {}
    return {"model": {**model, "pretrained": False}} if model.get("pretrained") else {}


# -- inputs ---------------------------------------------------------------------------------------
def load_tensor_file(path: Path) -> torch.Tensor:
    try:
        x = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable tensor file ({str(err).splitlines()[0]})") from None
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{path}: holds a {type(x).__name__}; expected one tensor (N, *input_shape)")
    return x


def load_image(path: Path, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Decode ``path`` to uint8 ``input_shape`` (C, H, W): grayscale or RGB, resized."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as TF

    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise DataError(f"{path}: this run's inputs have shape {input_shape}, not images; give a .pt tensor file")
    mode = ImageReadMode.GRAY if input_shape[0] == 1 else ImageReadMode.RGB
    try:
        image = decode_image(str(path), mode=mode)
    except (RuntimeError, OSError) as err:
        raise DataError(f"{path}: cannot decode image ({str(err).splitlines()[0]})") from None
    image = TF.to_dtype(image, torch.uint8, scale=True)
    if tuple(image.shape[1:]) != tuple(input_shape[1:]):
        image = TF.resize(image, list(input_shape[1:]), antialias=True)
    return image


def load_inputs(paths: list[Path], input_shape: tuple[int, ...]) -> tuple[torch.Tensor, list[str]]:
    """One ``.pt`` tensor file, or image files; returns the batch and a name per sample."""
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: no such input file")
    if len(paths) == 1 and paths[0].suffix == ".pt":
        x = load_tensor_file(paths[0])
        return x, [f"{paths[0].name}[{i}]" for i in range(len(x))]
    bad = [p for p in paths if p.suffix.lower() not in IMAGE_SUFFIXES]
    if bad:
        raise DataError(f"{bad[0]}: unsupported input; give one .pt tensor file or image files "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    return torch.stack([load_image(p, input_shape) for p in paths]), [str(p) for p in paths]


# -- output ---------------------------------------------------------------------------------------
def records(predictor: Predictor, prediction: Prediction, names: list[str]) -> list[dict[str, Any]]:
    labels = {rule: predictor.labels(d) for rule, d in prediction.decisions.items()}
    return [{"input": name,
             "probabilities": dict(zip(predictor.classes, (round(p, 6) for p in prediction.probabilities[i].tolist()),
                                       strict=True)),
             "decisions": {rule: labels[rule][i] for rule in labels}}
            for i, name in enumerate(names)]


def to_json(predictor: Predictor, rows: list[dict[str, Any]]) -> str:
    return json.dumps({"task": predictor.task, "classes": predictor.classes, "headline": predictor.headline,
                       "predictions": rows}, indent=2) + "\n"


def to_csv(predictor: Predictor, rows: list[dict[str, Any]]) -> str:
    """One row per input: ``input``, ``p_<class>`` columns, then one column per rule
    (multi-label decisions as class names joined by ``;``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    rules = list(rows[0]["decisions"]) if rows else []
    writer.writerow(["input", *(f"p_{c}" for c in predictor.classes), *rules])
    for row in rows:
        decided = [d if isinstance(d, str) else ";".join(d) for d in row["decisions"].values()]
        writer.writerow([row["input"], *row["probabilities"].values(), *decided])
    return out.getvalue()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lossbench.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (holds checkpoints/last.ckpt, thresholds.json)")
    parser.add_argument("inputs", type=Path, nargs="+", help="one .pt tensor file (N, *input_shape) or image files")
    parser.add_argument("--rule", action="append", help="decision rule (repeatable); 'all'; default: the headline")
    parser.add_argument("--format", choices=("json", "csv"), default="json")
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        predictor = load_run(args.run_dir, args.device)
        x, names = load_inputs(args.inputs, predictor.input_shape)
        prediction = predictor.predict(x, args.rule)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = records(predictor, prediction, names)
    text = to_json(predictor, rows) if args.format == "json" else to_csv(predictor, rows)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
