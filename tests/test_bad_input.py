"""Bad input -> one clear line naming the key or file, the bad value and what is allowed; nothing trained.

The table runs in process through the CLI's own steps (Hydra compose -> ``validate_values`` ->
``checkpoint_to_resume`` -> ``train``) and formats errors with the CLI's ``error_line``; a few real
subprocesses (``python -m lossbench.train``, ``lossbench-train``, ``make train``) check that the user
sees exactly that line on stderr and exit code 2.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from torchvision.io import write_jpeg

from lossbench import train as train_module
from lossbench.cli import error_line
from lossbench.config import RANGES, validate_values
from lossbench.engine import checkpoint_to_resume, train
from lossbench.errors import ConfigError, UserError
from lossbench.paths import CONFIG_DIR as CONFIG_PATH

from conftest import REPO, SHARED_DATA, TINY, compose_config

LABELS = "train-labels-idx1-ubyte.gz"


MNIST_AVAILABLE = (SHARED_DATA / "MNIST" / "raw").is_dir()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """Small COCO annotation files with bad content and a missing folder; damaged copies of the shared MNIST
    files when those are here (the cases needing them are skipped otherwise, the rest still run)."""
    tmp = tmp_path_factory.mktemp("bad_files")

    def mnist_copy(name, damage):
        raw = tmp / name / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for f in (SHARED_DATA / "MNIST" / "raw").glob("*.gz"):
            shutil.copy(f, raw / f.name)
        damage(raw)
        return tmp / name

    paths = {"nowhere": tmp / "nowhere", "coco": tmp / "coco"}
    if MNIST_AVAILABLE:
        paths.update({
            # a download cut short: the gzip stream ends early
            "cut_gzip": mnist_copy("cut_gzip", lambda raw: (raw / LABELS).write_bytes((raw / LABELS).read_bytes()[:1000])),
            "missing_file": mnist_copy("missing_file", lambda raw: (raw / "t10k-images-idx3-ubyte.gz").unlink()),
            # a valid gzip of a truncated IDX file
            "short_idx": mnist_copy("short_idx", lambda raw: (raw / LABELS).write_bytes(
                gzip.compress(gzip.decompress((raw / LABELS).read_bytes())[:5000]))),
        })
    (tmp / "coco" / "images").mkdir(parents=True)
    write_jpeg(torch.zeros(3, 10, 10, dtype=torch.uint8), str(tmp / "coco" / "images" / "a.jpg"))

    def annotations(file_name):
        return json.dumps({"images": [{"id": 1, "file_name": file_name}],
                           "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
                           "annotations": [{"id": 1, "image_id": 1, "category_id": 1}]})

    (tmp / "coco" / "malformed.json").write_text('{"images": [{"id": 1, "file_name": "a.jpg"},')
    (tmp / "coco" / "absolute.json").write_text(annotations("/etc/passwd"))
    (tmp / "coco" / "escapes.json").write_text(annotations("../../outside.jpg"))
    return paths


def coco(annotation_file: str) -> list[str]:
    return ["data=coco", "data.train_images={coco}/images", "data.test_images={coco}/images",
            f"data.train_annotations={{coco}}/{annotation_file}", f"data.test_annotations={{coco}}/{annotation_file}",
            "data.val_size=1", "data.cache=false"]


ANY_LIST = r"[a-z_0-9]+(, [a-z_0-9]+)*"
# (overrides, the whole error line as a regular expression); {name} = a path from bad_files
CASES = {
    "unknown dataset": (["data=imagenet"], rf"data='imagenet' is unknown; available: {ANY_LIST}"),
    "unknown head": (["head=tanh"], r"head='tanh' is unknown; available: partition, sigmoid, softmax"),
    "unknown loss": (["loss=mse"], rf"loss='mse' is unknown; available: abs_kl, {ANY_LIST}"),
    "unknown optimizer": (["optimizer=lbfgs"], rf"optimizer='lbfgs' is unknown; available: adadelta, {ANY_LIST}"),
    "unknown model": (["model=resnet"], rf"model='resnet' is unknown; available: cnn, {ANY_LIST}"),
    "misspelt key": (["optimizer.lrr=1"], r"optimizer\.lrr is not a config key; keys of optimizer: name, lr, "
                     r"weight_decay \(to add a new key use \+optimizer\.lrr=\.\.\.\)"),
    "unparsable override": (["seeds=[1,"], r"cannot parse the override 'seeds=\[1,': .*; override syntax: https://\S+"),
    "head invalid for loss": (["loss=cross_entropy", "head=sigmoid"],
                              r"head=sigmoid is not valid for loss=cross_entropy; valid heads for cross_entropy: softmax"),
    "partition head with abs_kl": (["loss=abs_kl", "head=partition"],
                                   r"head=partition is not valid for loss=abs_kl; valid heads for abs_kl: sigmoid, softmax"),
    "lr zero": (["optimizer.lr=0"], r"optimizer\.lr=0 is invalid; allowed: a number > 0"),
    "lr negative": (["optimizer.lr=-0.1"], r"optimizer\.lr=-0\.1 is invalid; allowed: a number > 0"),
    "lr not a number": (["optimizer.lr=fast"], r"optimizer\.lr='fast' is invalid; allowed: a number > 0"),
    "batch size zero": (["data.batch_size=0"], r"data\.batch_size=0 is invalid; allowed: an integer > 0"),
    "batch size negative": (["data.batch_size=-4"], r"data\.batch_size=-4 is invalid; allowed: an integer > 0"),
    "max_epochs zero": (["trainer.max_epochs=0"], r"trainer\.max_epochs=0 is invalid; allowed: an integer >= 1"),
    "one class": (["data.num_classes=1"], r"data\.num_classes=1 is invalid; allowed: an integer >= 2"),
    "threshold zero": (["head.threshold=0"], r"head\.threshold=0 is invalid; allowed: a number in the open interval \(0, 1\)"),
    "threshold above one": (["head.threshold=1.5"],
                            r"head\.threshold=1\.5 is invalid; allowed: a number in the open interval \(0, 1\)"),
    "label smoothing one": (["loss.label_smoothing=1.0"], r"loss\.label_smoothing=1\.0 is invalid; allowed: a number in \[0, 1\)"),
    "label smoothing negative": (["loss=cross_entropy", "loss.label_smoothing=-0.1"],
                                 r"loss\.label_smoothing=-0\.1 is invalid; allowed: a number in \[0, 1\)"),
    "eps negative": (["loss=bce_manual", "loss.eps=-1e-8"], r"loss\.eps=-1e-08 is invalid; allowed: a number >= 0"),
    "momentum one or more": (["optimizer=sgd", "optimizer.momentum=1.5"],
                             r"optimizer\.momentum=1\.5 is invalid; allowed: a number in \[0, 1\)"),
    "unknown reduction": (["loss.reduction=avg"], r"loss\.reduction='avg' is invalid; allowed: one of mean, sum, "
                          r"sum_classes \(none gives one loss per element: nothing to train on\)"),
    "reduction none": (["loss.reduction=none"], r"loss\.reduction='none' is invalid; allowed: one of mean, sum, "
                       r"sum_classes \(none gives one loss per element: nothing to train on\)"),
    "unknown logger": (["logger=tensorboard"], r"logger='tensorboard' is unknown; available: csv, wandb"),
    "unknown trainer": (["trainer=tpu"], rf"trainer='tpu' is unknown; available: cpu, {ANY_LIST}"),
    "weight decay negative": (["optimizer.weight_decay=-0.1"],
                              r"optimizer\.weight_decay=-0\.1 is invalid; allowed: a number >= 0"),
    "val size zero": (["data.val_size=0"], r"data\.val_size=0 is invalid; allowed: an integer > 0 or a fraction "
                      r"in \(0, 1\)"),
    "test size zero": (["data.test_size=0"], r"data\.test_size=0 is invalid; allowed: null, an integer > 0 or a "
                       r"fraction in \(0, 1\)"),
    "hidden width zero": (["model.hidden=[64,0]"], r"model\.hidden=\[64, 0\] is invalid for model=mlp; allowed: a "
                          r"list of integers >= 1 \(the hidden widths; \[\] for none\)"),
    "cnn hidden a list": (["model=cnn", "model.hidden=[8]"],
                          r"model\.hidden=\[8\] is invalid for model=cnn; allowed: an integer >= 1"),
    "no cnn channels": (["model=cnn", "model.channels=[]"],
                        r"model\.channels=\[\] is invalid; allowed: a non-empty list of integers >= 1"),
    "dropout one or more": (["model.dropout=1.5"], r"model\.dropout=1\.5 is invalid; allowed: a number in \[0, 1\)"),
    "no features": (["data.num_features=0"], r"data\.num_features=0 is invalid; allowed: an integer >= 1"),
    "cardinality zero": (["data.cardinality=0"], r"data\.cardinality=0 is invalid; allowed: a number > 0 "
                         r"\(and <= data\.num_classes\)"),
    "cardinality above the class count": (["data.cardinality=11"], r"data\.cardinality=11 is invalid; allowed: "
                                          r"0 < cardinality <= num_classes"),
    "imbalance not a number": (["data.imbalance=steep"],
                               r"data\.imbalance='steep' is invalid; allowed: a number >= 0 \(0: balanced\)"),
    "noise negative": (["data.noise=-1"], r"data\.noise=-1 is invalid; allowed: a number >= 0"),
    "multilabel not a boolean": (["data.multilabel=maybe"],
                                 r"data\.multilabel='maybe' is invalid for data=synthetic; allowed: true or false"),
    "multilabel auto on synthetic data": (["data.multilabel=auto"], r"data\.multilabel='auto' is invalid for "
                                          r"data=synthetic; allowed: true or false"),
    "problem seed negative": (["data.problem_seed=-3"], r"data\.problem_seed=-3 is invalid; allowed: an integer >= 0"),
    "negative gradient clipping": (["trainer.gradient_clip_val=-1"], r"trainer\.gradient_clip_val=-1 is invalid; "
                                   r"allowed: null or a number > 0"),
    "unknown clipping algorithm": (["trainer.gradient_clip_algorithm=clip"], r"trainer\.gradient_clip_algorithm="
                                   r"'clip' is invalid; allowed: null, norm or value"),
    "accumulated gradients": (["+trainer.accumulate_grad_batches=4"], r"trainer\.accumulate_grad_batches=4 is "
                              r"invalid; allowed: 1 \(lossbench steps the optimizer once per batch; raise "
                              r"data\.batch_size instead\)"),
    "log every zero steps": (["trainer.log_every_n_steps=0"],
                             r"trainer\.log_every_n_steps=0 is invalid; allowed: an integer >= 1"),
    "divergence check every zero steps": (["trainer.divergence_check_every=0"],
                                          r"trainer\.divergence_check_every=0 is invalid; allowed: null or an "
                                          r"integer >= 1"),
    "unknown scheduler": (["scheduler=warmup"], r"scheduler='warmup' is unknown; available: cosine, none, onecycle"),
    "unknown scheduler name": (["scheduler.name=warm"],
                               r"scheduler\.name='warm' is invalid; allowed: one of none, cosine, onecycle"),
    "negative warm-up": (["scheduler=cosine", "scheduler.warmup_steps=-1"],
                         r"scheduler\.warmup_steps=-1 is invalid; allowed: an integer >= 0"),
    "one-cycle peak outside the run": (["scheduler=onecycle", "scheduler.pct_start=1.5"],
                                       r"scheduler\.pct_start=1\.5 is invalid; allowed: a number in the open "
                                       r"interval \(0, 1\)"),
    "negative final rate": (["scheduler=cosine", "scheduler.min_lr=-0.1"],
                            r"scheduler\.min_lr=-0\.1 is invalid; allowed: a number >= 0"),
    "unknown noise": (["noise=gaussian"], rf"noise='gaussian' is unknown; available: asymmetric, {ANY_LIST}"),
    "unknown members forward": (["members_forward=scan"],
                                r"members_forward='scan' is invalid; allowed: auto, vmap or loop"),

    "unknown z activation": (["loss=partition_softmax", "head.z_activation=relu"],
                             r"head\.z_activation='relu' is invalid; allowed: one of clip, softplus"),
    "seed negative": (["seed=-1"], r"seed=-1 is invalid; allowed: an integer >= 0"),
    "empty seed list": (["seeds=[]"], r"seeds=\[\] is invalid; allowed: null or a non-empty list of distinct integers >= 0"),
    "negative seed in list": (["seeds=[-1]"], r"seeds=\[-1\] is invalid; allowed: null or a non-empty list of distinct "
                              r"integers >= 0"),
    "repeated seed in list": (["seeds=[1,1]"], r"seeds=\[1, 1\] is invalid; allowed: .*distinct integers >= 0"),
    "train size zero": (["data.train_size=0"], r"data\.train_size=0 is invalid; allowed: null or an integer > 0"),
    "unknown trainer argument": (["+trainer.epochs=3"], r"trainer\.epochs is not a Trainer argument lossbench passes on; "
                                 r"allowed: accelerator, .*max_epochs, .*"),
    "unknown optimizer argument": (["+optimizer.beta=0.9"],
                                   r"optimizer\.beta is not an argument of optimizer=adam; allowed: amsgrad, betas, .*"),
    "gpu without a gpu": (["trainer=gpu"], r"trainer\.accelerator=gpu but no CUDA GPU is visible here; allowed on "
                          r"this machine: auto, cpu \(or trainer=cpu\)"),
    "no devices": (["trainer.devices=0"], r"trainer: `Trainer\(devices=0\)` value is not a valid input using cpu accelerator\."),
    "unknown precision": (["trainer.precision=13"], r"trainer: Precision 13 is invalid\. Allowed precision values: .*'32-true'.*"),
    "cnn on feature vectors": (["model=cnn"], r"model 'cnn' needs image inputs \(C, H, W\); this dataset gives shape \(32,\)"),
    "resume with nothing to resume": (["resume=true"], r"resume=true: no unfinished run of this configuration with "
                                      r"checkpoints/last\.ckpt under .*; use resume=auto or resume=false to start a new run"),
    "resume not a mode or path": (["resume=0.5"], r"resume=0\.5 is invalid; allowed: auto .*, true .*, false, or the path "
                                  r"of a run directory or \.ckpt file"),
    "validation larger than training set": (["data=mnist", f"data.root={SHARED_DATA}", "data.val_size=60000"],
                                            r"data\.val_size=60000 is invalid; allowed: 1\.\.59999 \(the training set "
                                            r"has 60000 images\)"),
    "MNIST folder missing": (["data=mnist", "data.root={nowhere}"],
                             r"{nowhere}/MNIST/raw: no such folder; data\.root must hold MNIST/raw/ .*"),
    "MNIST file missing": (["data=mnist", "data.root={missing_file}"],
                           r"{missing_file}/MNIST/raw/t10k-images-idx3-ubyte\.gz: missing; .* must hold .*"),
    "MNIST gzip cut short": (["data=mnist", "data.root={cut_gzip}"],
                             r"{cut_gzip}/MNIST/raw/train-labels-idx1-ubyte\.gz: not a readable gzip file \(.*\)"),
    "MNIST IDX truncated": (["data=mnist", "data.root={short_idx}"],
                            r"{short_idx}/MNIST/raw/train-labels-idx1-ubyte\.gz: truncated: the header declares 60000 .*"),
    "COCO root not set": (["data=coco", "data.root=null"], r"data\.train_images is not set; allowed: set data\.root .*"),
    "COCO malformed JSON": (coco("malformed.json"), r"{coco}/malformed\.json: malformed JSON \(.*\)"),
    "COCO absolute file_name": (coco("absolute.json"), r"{coco}/absolute\.json: image file_name '/etc/passwd' is not a "
                                r"path inside the image folder \(absolute paths and '\.\.' are refused\)"),
    "COCO file_name escaping the folder": (coco("escapes.json"), r"{coco}/escapes\.json: image file_name "
                                           r"'\.\./\.\./outside\.jpg' is not a path inside the image folder .*"),
}


def _fill(text: str, paths: dict, escape: bool) -> str:
    for name, path in paths.items():
        text = text.replace("{" + name + "}", re.escape(str(path)) if escape else str(path))
    return text


def cli_steps(overrides: list[str], run_dir) -> str:
    """What ``lossbench.train.run`` does for one job, in process; returns the error line a user sees."""
    try:
        cfg = compose_config([f"output_root={run_dir.parent / 'runs'}", *TINY, *overrides])
        validate_values(cfg)
        train(cfg, run_dir, resume_from=checkpoint_to_resume(cfg))
    except (UserError, HydraException, OmegaConfBaseException) as err:
        return error_line(err)
    pytest.fail(f"{overrides}: no error; it trained")


def test_every_validated_key_and_every_group_has_a_case():
    """The table covers what lossbench validates: each key of config.RANGES (and model.hidden and
    data.multilabel, checked per model / dataset) has a case with a bad value, each config group a case with
    an unknown name."""
    overridden = {o.split("=", 1)[0].lstrip("+") for overrides, _ in CASES.values() for o in overrides}
    keys = {key for key, _, _ in RANGES} | {"model.hidden", "data.multilabel"}
    assert keys - overridden == set()
    unknown_names = {o.split("=", 1)[0] for overrides, expected in CASES.values() for o in overrides
                     if "is unknown; available" in expected and expected.startswith(o.split("=", 1)[0] + "=")}
    # a config group is a folder of .yaml files (configs/wandb_sweep/ holds W&B's .yml sweep files, no group)
    groups = {p.name for p in CONFIG_PATH.iterdir()
              if p.is_dir() and p.name not in ("hydra", "experiment") and any(p.glob("*.yaml"))}
    assert groups - unknown_names == set()


def _needs(case: str, bad_files: dict) -> str | None:
    """Why a case cannot run here: it names damaged MNIST copies or the shared MNIST files, absent here."""
    overrides, _ = CASES[case]
    missing = set(re.findall(r"\{(\w+)\}", " ".join(overrides))) - set(bad_files)
    if missing or (not MNIST_AVAILABLE and any(str(SHARED_DATA) in o for o in overrides)):
        return f"MNIST IDX files not found under {SHARED_DATA}/MNIST/raw (set LOSSBENCH_DATA)"
    return None


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_naming_what_is_allowed(case, bad_files, tmp_path):
    overrides, expected = CASES[case]
    if reason := _needs(case, bad_files):
        pytest.skip(reason)
    line = cli_steps([_fill(o, bad_files, escape=False) for o in overrides], tmp_path / "run")
    assert "\n" not in line
    assert re.fullmatch(_fill(expected, bad_files, escape=True), line), line
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "summary.json").exists()


def test_main_prints_one_line_and_exits_2_in_process(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    full_error_before = os.environ.get("HYDRA_FULL_ERROR")
    for args, expected in ((["loss=mse"], "loss='mse' is unknown"), (["optimizer.lr=0"], "optimizer.lr=0 is invalid"),
                           (["nokey=1"], "nokey is not a config key; keys of the top level: hydra, data, head"),
                           # Hydra's own ValueError while composing, not one of its HydraExceptions
                           (["data=0"], "cannot compose the config from these overrides: Config group override "
                                        "must be a string or a list. Got int")):
        monkeypatch.setattr(sys, "argv", ["lossbench-train", *args, f"output_root={tmp_path}"])
        with pytest.raises(SystemExit) as stop:
            train_module.main()
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {expected}"), err
    assert os.environ.get("HYDRA_FULL_ERROR") == full_error_before  # main sets it only while Hydra runs


def test_full_error_keeps_the_traceback(monkeypatch):
    monkeypatch.setattr(train_module, "_user_full_error", "1")
    with pytest.raises(ConfigError, match="optimizer.lr=0 is invalid"):
        train_module.exit_with_error_line(ConfigError("optimizer.lr=0 is invalid; allowed: a number > 0"))


@pytest.mark.slow
def test_lossbench_train_and_make_train_print_the_same_single_line(tmp_path):
    expected = "error: optimizer.lrr is not a config key; keys of optimizer: name, lr, weight_decay " \
               "(to add a new key use +optimizer.lrr=...)"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("HYDRA_FULL_ERROR", None)
    args = ["optimizer.lrr=1", f"output_root={tmp_path}"]
    script = subprocess.run([str(REPO / ".venv" / "bin" / "lossbench-train"), *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert script.returncode == 2 and script.stderr.splitlines() == [expected], script.stderr
    # make runs python -m lossbench.train; it echoes the command and adds its own "make: *** ... Error 2" line; -o: never reinstall here
    make = subprocess.run(["make", "-o", ".venv/.installed", "train", f"ARGS={' '.join(args)}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert make.returncode == 2 and make.stderr.splitlines()[0] == expected, make.stderr
    assert "Traceback" not in script.stderr + make.stderr
    assert not list(tmp_path.rglob("summary.json"))

