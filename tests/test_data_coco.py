"""COCO tags: exact targets from a hand-built instances file, bad input, the tensor cache, and the
sample written by scripts/make_coco_sample.py trained end to end."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from PIL import Image
from torchvision.io import write_jpeg, write_png
from torchvision.transforms.v2 import functional as TF

from lossbench.data.coco import CocoDataModule, CocoTags
from lossbench.data.mnist import load_split
from lossbench.data.mnist_multi import compose_canvases
from lossbench.engine import train
from lossbench.errors import ConfigError, DataError

from conftest import SHARED_DATA, TINY, compose_config, run_cli, trained_classes

GRAY = (torch.arange(16 * 12, dtype=torch.int64) % 251).to(torch.uint8).view(1, 16, 12)


def hand_built(root, annotations=None, images=None, categories=None, name="instances_train2017.json"):
    """Four images (RGB JPEG, grayscale PNG, RGBA PNG, an unannotated JPEG); category ids with gaps,
    listed out of order; image ids out of order; cat annotated twice on one image."""
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    write_jpeg(torch.full((3, 20, 30), 120, dtype=torch.uint8), str(folder / "a.jpg"))
    write_png(GRAY, str(folder / "b.png"))
    Image.new("RGBA", (8, 8), (50, 50, 50, 128)).save(folder / "c.png")  # torchvision writes no alpha
    write_jpeg(torch.zeros(3, 10, 10, dtype=torch.uint8), str(folder / "d.jpg"))
    document = {
        "images": images if images is not None else [
            {"id": 5, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.png"},
            {"id": 11, "file_name": "d.jpg"}, {"id": 9, "file_name": "c.png"}],
        "categories": categories if categories is not None else [
            {"id": 20, "name": "zebra"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": annotations if annotations is not None else [
            {"id": 1, "image_id": 5, "category_id": 3}, {"id": 2, "image_id": 5, "category_id": 3},
            {"id": 3, "image_id": 5, "category_id": 20}, {"id": 4, "image_id": 2, "category_id": 7},
            {"id": 5, "image_id": 9, "category_id": 3}],
    }
    annotation_file = root / name
    annotation_file.write_text(json.dumps(document))
    return folder, annotation_file


def test_targets_classes_and_images_exactly(tmp_path):
    folder, annotation_file = hand_built(tmp_path)
    tags = CocoTags(folder, annotation_file)
    assert tags.classes == ["cat", "dog", "zebra"] and tags.category_ids == [3, 7, 20]
    assert tags.image_ids == [2, 5, 9, 11]
    assert tags.targets.tolist() == [[0, 1, 0], [1, 0, 1], [1, 0, 0], [0, 0, 0]]
    assert tags.targets.dtype == torch.float32
    gray, target = tags[0]
    assert gray.shape == (3, 16, 12) and gray.dtype == torch.uint8
    assert torch.equal(gray, GRAY.expand(3, -1, -1))  # PNG is lossless: grayscale replicated to RGB
    assert target.tolist() == [0.0, 1.0, 0.0]
    assert tags[1][0].shape == (3, 20, 30) and (tags[1][0].int() - 120).abs().max() <= 2  # JPEG
    assert torch.equal(tags[2][0], torch.full((3, 8, 8), 50, dtype=torch.uint8))  # alpha dropped


def test_drop_empty_and_transform(tmp_path):
    folder, annotation_file = hand_built(tmp_path)
    tags = CocoTags(folder, annotation_file, transform=lambda image: image.float() / 255, keep_empty=False)
    assert tags.image_ids == [2, 5, 9] and tags.targets.sum(1).tolist() == [1, 2, 1]
    image, _ = tags[0]
    assert image.dtype == torch.float32 and torch.allclose(image[0], GRAY[0].float() / 255)


BAD_DOCUMENTS = {
    "unknown image": (dict(annotations=[{"id": 8, "image_id": 99, "category_id": 3}]),
                      "annotation 8 refers to image_id 99, which is not in 'images'"),
    "unknown category": (dict(annotations=[{"id": 9, "image_id": 5, "category_id": 4}]),
                         "annotation 9 refers to category_id 4, which is not in 'categories'"),
    "absolute file name": (dict(images=[{"id": 1, "file_name": "/etc/passwd"}], annotations=[]),
                           "image file_name '/etc/passwd' is not a path inside the image folder"),
    "escaping file name": (dict(images=[{"id": 1, "file_name": "../secret.jpg"}], annotations=[]),
                           "image file_name '../secret.jpg' is not a path inside the image folder"),
    "image without file name": (dict(images=[{"id": 1}]), "images[0] lacks 'file_name'"),
    "numeric file name": (dict(images=[{"id": 1, "file_name": 7}], annotations=[]),
                          "image file_name 7 is not a string"),
    "duplicate image id": (dict(images=[{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.png"}],
                                annotations=[]), "images id 1 appears more than once"),
}


@pytest.mark.parametrize("case", list(BAD_DOCUMENTS))
def test_bad_annotations_are_one_line_naming_the_file(case, tmp_path):
    changes, words = BAD_DOCUMENTS[case]
    folder, annotation_file = hand_built(tmp_path, **changes)
    with pytest.raises(DataError) as err:
        CocoTags(folder, annotation_file)
    assert str(err.value) == f"{annotation_file}: {words}" + (
        " (absolute paths and '..' are refused)" if case in ("absolute file name", "escaping file name") else "")


def test_bad_files(tmp_path):
    folder, annotation_file = hand_built(tmp_path)
    text = annotation_file.read_text()
    annotation_file.write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match=rf"^{annotation_file}: malformed JSON \(.*line 1 column \d+") as err:
        CocoTags(folder, annotation_file)
    assert "\n" not in str(err.value)
    annotation_file.write_text("[1, 2]")
    with pytest.raises(DataError, match="top level is list"):
        CocoTags(folder, annotation_file)
    annotation_file.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(DataError, match="'annotations' is missing or not a list"):
        CocoTags(folder, annotation_file)
    with pytest.raises(DataError, match=f"{tmp_path / 'nope.json'}: no such annotation file"):
        CocoTags(folder, tmp_path / "nope.json")
    with pytest.raises(DataError, match=f"{tmp_path / 'nofolder'}: no such image folder"):
        CocoTags(tmp_path / "nofolder", annotation_file)


def test_missing_and_unreadable_images(tmp_path):
    folder, annotation_file = hand_built(tmp_path)
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    tags = CocoTags(folder, annotation_file)
    with pytest.raises(DataError, match=rf"^{folder / 'c.png'}: unreadable image \(") as err:
        tags[2]
    assert "\n" not in str(err.value) and ".cpp" not in str(err.value)
    (folder / "c.png").unlink()
    with pytest.raises(DataError, match=rf"^{folder / 'c.png'}: image file missing \(image id 9 in "):
        CocoTags(folder, annotation_file)


def datamodule(root, **params):
    folder, annotation_file = root / "images", root / "instances_train2017.json"
    if not annotation_file.exists():
        hand_built(root)
    defaults = dict(train_images=folder, train_annotations=annotation_file, test_images=folder,
                    test_annotations=annotation_file, image_size=8, val_size=1, cache_dir=root / "cache")
    return CocoDataModule(**{**defaults, **params})


def test_datamodule_splits_targets_and_cache(tmp_path):
    dm = datamodule(tmp_path)
    dm.setup()
    assert dm.task == "multilabel" and dm.num_classes == 3 and dm.classes == ["cat", "dog", "zebra"]
    assert dm.input_shape == (3, 8, 8) and dm.splits["train"].x.dtype == torch.uint8
    assert dm.describe()["sizes"] == {"train": 3, "val": 1, "test": 4}
    tags = dm.tags["train"]
    assert torch.equal(dm.splits["test"].y, tags.targets)  # the test file here is the same file
    together = torch.cat([dm.splits["train"].y, dm.splits["val"].y])
    assert sorted(map(tuple, together.tolist())) == sorted(map(tuple, tags.targets.tolist()))
    expected = TF.resize(GRAY.expand(3, -1, -1), [8, 8], antialias=True)  # b.png, the first image by id
    assert torch.equal(dm.splits["test"].x[0], expected)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3  # train, val, test selections
    # later runs read the cache: spoil every image, the tensors still come back identical
    for image in (tmp_path / "images").iterdir():
        image.write_bytes(b"spoiled")
    again = datamodule(tmp_path)
    again.setup()
    for name in ("train", "val", "test"):
        assert torch.equal(again.splits[name].x, dm.splits[name].x)
    without_cache = datamodule(tmp_path, cache=False)
    with pytest.raises(DataError, match="unreadable image"):
        without_cache.setup()


def test_unreadable_image_in_a_decode_worker_is_still_one_line(tmp_path):
    dm = datamodule(tmp_path, cache=False, decode_workers=1)
    (tmp_path / "images" / "a.jpg").write_bytes(b"\xff\xd8\xff broken jpeg")
    with pytest.raises(DataError) as err:
        dm.setup()
    assert str(err.value).startswith(f"{tmp_path / 'images' / 'a.jpg'}: unreadable image (")
    assert "\n" not in str(err.value)


def test_datamodule_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"data.train_images is not set; allowed: set data.root"):
        CocoDataModule()
    with pytest.raises(ConfigError, match=r"data.val_size=4 is invalid; allowed: 1..3"):
        datamodule(tmp_path, val_size=4).setup()
    with pytest.raises(ConfigError, match=r"data.image_size=2 is invalid"):
        datamodule(tmp_path, image_size=2)
    folder, _ = hand_built(tmp_path)
    _, other = hand_built(tmp_path, categories=[{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"},
                                                 {"id": 20, "name": "horse"}], name="other.json")
    with pytest.raises(DataError, match=f"{other}: its categories differ"):
        datamodule(tmp_path, test_annotations=other).setup()


def test_root_and_year_give_the_coco_layout_read_only_at_setup(tmp_path):
    dm = CocoDataModule(root=str(tmp_path), year=2014)  # built, not read: sweeps ask for .task this way
    assert dm.task == "multilabel"
    assert dm.paths["test_annotations"] == tmp_path / "annotations" / "instances_val2014.json"
    with pytest.raises(DataError, match=f"{tmp_path / 'train2014'}: no such image folder"):
        dm.setup()


# -- the sample written by scripts/make_coco_sample.py ------------------------------------------------
SAMPLE = {"train": 96, "val": 48}


@pytest.fixture(scope="module")
def coco_sample(tmp_path_factory):
    """Run the script's ``main`` in this process (the imports are already paid for)."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST IDX files not found under {SHARED_DATA}/MNIST/raw (set LOSSBENCH_DATA)")
    from lossbench.data import coco_sample as script
    out = tmp_path_factory.mktemp("coco-sample")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("LOSSBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "lossbench-cache"))
        code = script.main(["--out", str(out), "--mnist-root", str(SHARED_DATA), "--train", str(SAMPLE["train"]),
                            "--val", str(SAMPLE["val"]), "--seed", "2"])
    assert code == 0
    assert f"train: {SAMPLE['train']} images" in printed.getvalue()
    return out


def test_sample_targets_equal_the_canvases_digits(coco_sample, tmp_path):
    tags = CocoTags(coco_sample / "val2017", coco_sample / "annotations" / "instances_val2017.json")
    assert tags.classes == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    test_digits = load_split("mnist", SHARED_DATA, False, False, tmp_path / "cache")
    canvases = compose_canvases(test_digits.x, test_digits.y, SAMPLE["val"], min_digits=0, max_digits=3,
                                distinct=False, seed=2 * 2 + 1)
    assert torch.equal(tags.targets, canvases.y)
    assert (tags.targets.sum(1) == 0).any()  # some images carry no annotation
    for index in (1, 3):  # odd images are lossless grayscale PNGs
        assert torch.equal(tags[index][0], canvases.x[index].expand(3, -1, -1))


def _mean_label_count(annotation_file) -> float:
    """Distinct categories per image, averaged over every image of a COCO instances file (read as JSON)."""
    document = json.loads(annotation_file.read_text())
    per_image = {image["id"]: set() for image in document["images"]}
    for annotation in document["annotations"]:
        per_image[annotation["image_id"]].add(annotation["category_id"])
    return sum(map(len, per_image.values())) / len(per_image)


@pytest.mark.slow
def test_cli_trains_on_the_coco_sample(coco_sample, tmp_path):
    digits = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    test_labels = _mean_label_count(coco_sample / "annotations" / "instances_val2017.json")  # the test split
    args = [f"output_root={tmp_path}", "data=coco", f"data.root={coco_sample}", "data.val_size=16",
            "data.image_size=32", f"data.cache_dir={tmp_path / 'cache'}", *TINY, "trainer.max_epochs=5"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test/map" in result.stdout
    summaries = list(tmp_path.glob("coco-sigmoid-bce_with_logits-seed0/*/summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    assert summary["task"] == "multilabel"
    assert trained_classes(summaries[0].parent) == (digits, 10)  # the sample's categories, one output each
    assert summary["metrics"]["test/true_count"] == pytest.approx(test_labels, abs=1e-6)
    assert summary["metrics"]["test/auroc"] > 0.6  # chance 0.5; 10 steps: 0.71 measured
    cfg = compose_config(["data=coco", f"data.root={coco_sample}", "data.val_size=16", "data.image_size=32",
                          f"data.cache_dir={tmp_path / 'cache'}", "loss=cross_entropy", "model=cnn", *TINY])
    summary = train(cfg, tmp_path / "softmax")
    assert summary["status"] == "completed" and trained_classes(tmp_path / "softmax") == (digits, 10)
    assert summary["metrics"]["test/true_count"] == pytest.approx(test_labels, abs=1e-6)
