"""Your own data (data=image_folder, image_csv, arrays): exact classes, targets and splits from fixtures made
here, the stratified carving, the normalisation, the cache, and every bad input as one line naming file and row."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import write_jpeg, write_png

from lossbench.data import build_datamodule
from lossbench.data import image_csv as image_csv_module
from lossbench.data.splits import carve, count_of, cover, normalization, uncovered
from lossbench.errors import ConfigError, DataError

# -- fixtures ------------------------------------------------------------------------------------------


def constant_image(path, value: int, size=(14, 10), kind="png"):
    """A constant image: resizing keeps it exact (PNG) or within 2 levels (JPEG), so a decoded tensor's
    first pixel tells which file it came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = torch.full((3, *size), value, dtype=torch.uint8)
    (write_png if kind == "png" else write_jpeg)(image, str(path))
    return path


def pixel_ids(x: torch.Tensor) -> list[int]:
    return x[:, 0, 0, 0].tolist()


def folder_tree(root, counts: dict[str, int], start: int = 0) -> dict[int, str]:
    """``root/<class>/<n>.png`` with counts[class] images, each a distinct constant value -> its class."""
    value_class, value = {}, start
    for name, n in counts.items():
        for i in range(n):
            value += 3
            constant_image(root / name / f"{i:03d}.png", value)
            value_class[value] = name
    return value_class


def write_csv(path, lines: list[str]):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tagged_images(tmp_path, tags: dict[str, str], kind="png"):
    """Images ``imgs/<name>`` (value 10 + 5 i) and ``tags.csv`` rows ``name,tags``; returns value -> tags."""
    values = {}
    for i, (name, labels) in enumerate(tags.items()):
        constant_image(tmp_path / "imgs" / name, 10 + 5 * i, kind=kind)
        values[10 + 5 * i] = labels
    write_csv(tmp_path / "tags.csv", ["image,tags", *(f"{n},{t}" for n, t in tags.items())])
    return values


def build(name, tmp_path, **params):
    dm = build_datamodule(name, cache_dir=str(tmp_path / "cache"), seed=0, **params)
    dm.setup()
    return dm


MULTI_TAGS = {f"{i:02d}.png": t for i, t in enumerate(
    ["cat dog", "dog", "", "cat", "bird cat", "dog", "cat", "bird", "dog cat", "cat", "dog", "bird dog", "",
     "cat", "dog", "bird", "cat dog", "dog", "cat", "bird"])}


# -- image_csv -----------------------------------------------------------------------------------------


def test_csv_multilabel_targets_classes_and_carved_splits_exactly(tmp_path):
    values = tagged_images(tmp_path, MULTI_TAGS)
    dm = build("image_csv", tmp_path, csv=str(tmp_path / "tags.csv"), image_root=str(tmp_path / "imgs"),
               image_size=8, val_size=0.25, test_size=0.25)
    assert dm.task == "multilabel" and dm.classes == ["bird", "cat", "dog"] and dm.num_classes == 3
    assert dm.input_shape == (3, 8, 8) and dm.splits["train"].x.dtype == torch.uint8
    assert dm.describe()["sizes"] == {"train": 10, "val": 5, "test": 5}
    seen = []
    for split in dm.splits.values():
        for value, target in zip(pixel_ids(split.x), split.y.tolist(), strict=True):
            expected = [float(c in values[value].split()) for c in dm.classes]
            assert target == expected, (value, values[value])
            seen.append(value)
    assert sorted(seen) == sorted(values)  # every row once, none lost or repeated
    for split in ("val", "test"):
        assert (dm.splits[split].y.sum(0) > 0).all(), f"every label has a positive in {split}"
    assert (dm.splits["val"].y.sum(1) == 0).sum() + (dm.splits["train"].y.sum(1) == 0).sum() + \
        (dm.splits["test"].y.sum(1) == 0).sum() == 2  # the two rows without tags stay, with no label


def test_csv_auto_single_label_tsv_split_column_and_numeric_classes(tmp_path):
    lines = ["split\tfile\tlabel"]
    expected = {}
    for i in range(12):
        value, label, split = 20 + 4 * i, ["2", "10", "1"][i % 3], ["train", "TRAIN", "valid", "test"][i % 4]
        constant_image(tmp_path / "imgs" / f"{i}.jpg", value, kind="jpeg")
        lines.append(f"{split}\t{i}.jpg\t{label}")
        expected[value] = (label, {"train": "train", "valid": "val", "test": "test"}[split.lower()])
    write_csv(tmp_path / "labels.tsv", lines)
    dm = build("image_csv", tmp_path, csv=str(tmp_path / "labels.tsv"), image_root=str(tmp_path / "imgs"),
               path_column="file", label_column="label", split_column="split", image_size=8)
    assert dm.task == "multiclass" and dm.classes == ["1", "2", "10"]  # integers sorted as numbers
    assert dm.describe()["sizes"] == {"train": 6, "val": 3, "test": 3}
    for name, split in dm.splits.items():
        for value, target in zip(pixel_ids(split.x), split.y.tolist(), strict=True):
            match = min(expected, key=lambda v, value=value: abs(v - value))  # JPEG: within 2 levels
            assert abs(match - value) <= 2
            assert (dm.classes[target], name) == expected[match]


def test_csv_separate_split_files_pipe_separator_suffix_and_class_list(tmp_path):
    for i in range(9):
        constant_image(tmp_path / "pics" / f"id{i}.png", 30 + 3 * i)
    write_csv(tmp_path / "train.csv", ["name,tags", "id0,b|a", "id1,a", "id2,c", "id3,c | b", "id4,a"])
    write_csv(tmp_path / "val.csv", ["name,tags", "id5,a|b|c", "id6,"])
    write_csv(tmp_path / "test.csv", ["name,tags", "id7,c", "id8,b"])
    (tmp_path / "classes.txt").write_text("c\nb\n\na\n")
    dm = build("image_csv", tmp_path, csv=str(tmp_path / "train.csv"), val_csv=str(tmp_path / "val.csv"),
               test_csv=str(tmp_path / "test.csv"), image_root=str(tmp_path / "pics"), separator="|",
               path_suffix=".png", classes=str(tmp_path / "classes.txt"), image_size=8)
    assert dm.classes == ["c", "b", "a"] and dm.task == "multilabel"  # the file's order
    assert dm.describe()["sizes"] == {"train": 5, "val": 2, "test": 2}
    assert pixel_ids(dm.splits["val"].x) == [45, 48]
    assert dm.splits["val"].y.tolist() == [[1, 1, 1], [0, 0, 0]]
    assert dm.splits["train"].y.tolist() == [[0, 1, 1], [0, 0, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1]]
    listed = build("image_csv", tmp_path / "listed", csv=str(tmp_path / "train.csv"), separator="|",
                   image_root=str(tmp_path / "pics"), path_suffix=".png", classes=["a", "b", "c", "d"],
                   image_size=8, val_size=1, test_size=1)
    assert listed.classes == ["a", "b", "c", "d"] and listed.num_classes == 4


def test_csv_image_root_defaults_to_the_csv_folder_and_channels_1_is_grayscale(tmp_path):
    tags = {f"{i}.png": ["x", "y"][i % 2] for i in range(6)}
    tagged_images(tmp_path, tags)
    os.replace(tmp_path / "tags.csv", tmp_path / "imgs" / "tags.csv")
    dm = build("image_csv", tmp_path, csv=str(tmp_path / "imgs" / "tags.csv"), channels=1, image_size=8,
               val_size=2, test_size=2)
    assert dm.input_shape == (1, 8, 8) and dm.splits["train"].x.shape[1:] == (1, 8, 8)
    # a gray pixel of a constant RGB image (v, v, v) is v
    assert sorted(pixel_ids(torch.cat([s.x for s in dm.splits.values()]))) == [10, 15, 20, 25, 30, 35]


def test_csv_label_in_test_only_is_a_warning_naming_file_and_row(tmp_path, caplog):
    for i in range(6):
        constant_image(tmp_path / "imgs" / f"{i}.png", 50 + i)
    write_csv(tmp_path / "train.csv", ["image,labels", "0.png,a", "1.png,b", "2.png,a", "3.png,b"])
    write_csv(tmp_path / "test.csv", ["image,labels", "4.png,a", "5.png,zebra"])
    with caplog.at_level(logging.WARNING, logger="lossbench"):
        dm = build("image_csv", tmp_path, csv=str(tmp_path / "train.csv"), test_csv=str(tmp_path / "test.csv"),
                   image_root=str(tmp_path / "imgs"), image_size=8, val_size=1)
    assert dm.classes == ["a", "b", "zebra"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{tmp_path / 'test.csv'}:3: label 'zebra' is in test but never in training (1 test row(s))" in warnings


def test_csv_cache_is_reused_and_rebuilt_when_an_image_changes(tmp_path, monkeypatch):
    tagged_images(tmp_path, {f"{i}.png": "ab"[i % 2] for i in range(6)})
    params = dict(csv=str(tmp_path / "tags.csv"), image_root=str(tmp_path / "imgs"), image_size=8, val_size=2,
                  test_size=2)
    first = build("image_csv", tmp_path, **params)
    assert len(list((tmp_path / "cache").glob("tags-8px-3ch-*.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(image_csv_module, "decode_resized", no_decoding)
    again = build("image_csv", tmp_path, **params)
    for name in first.splits:
        assert torch.equal(again.splits[name].x, first.splits[name].x)
    monkeypatch.undo()
    constant_image(tmp_path / "imgs" / "0.png", 200, size=(15, 10))  # edited: another size and mtime
    changed = build("image_csv", tmp_path, **params)
    assert 200 in pixel_ids(torch.cat([s.x for s in changed.splits.values()]))
    assert len(list((tmp_path / "cache").glob("tags-8px-3ch-*.pt"))) == 2


def bad_csv_cases(tmp_path):
    """(rows of tags.csv, extra params, the expected line with {csv} and {root} placeholders)."""
    return {
        "missing image": (["image,tags", "0.png,a", "nope.png,b"], {},
                          "{csv}:3: image file missing: {root}/nope.png"),
        "unknown label": (["image,tags", "0.png,a", "1.png,b", "2.png,c"], {"classes": ["a", "b"]},
                          "{csv}:4: label 'c' is not in data.classes (a, b)"),
        "empty label in single-label data": (["image,tags", "0.png,a", "1.png,", "2.png,b"], {},
                                             "{csv}:3: empty label field; single-label data needs one label per "
                                             "image (data.multilabel=true allows images without labels)"),
        "two labels, multilabel=false": (["image,tags", "0.png,a b", "1.png,b"], {"multilabel": False},
                                         "{csv}:2: 2 labels ('a', 'b') but data.multilabel=false"),
        "duplicate path": (["image,tags", "0.png,a", "1.png,b", "./0.png,b"], {},
                           "{csv}:4: image './0.png' is listed again (first at {csv}:2)"),
        "absolute path": (["image,tags", "0.png,a", "/etc/passwd,b"], {},
                          "{csv}:3: image path '/etc/passwd' is not a path inside data.image_root ({root}) "
                          "(absolute paths and '..' are refused)"),
        "escaping path": (["image,tags", "0.png,a", "sub/../../1.png,b"], {},
                          "{csv}:3: image path 'sub/../../1.png' is not a path inside data.image_root ({root}) "
                          "(absolute paths and '..' are refused)"),
        "windows drive": (["image,tags", "0.png,a", "C:\\x.png,b"], {},
                          "{csv}:3: image path 'C:\\\\x.png' is not a path inside data.image_root ({root}) "
                          "(absolute paths and '..' are refused)"),
        "ragged row": (["image,tags", "0.png,a", "1.png,b,extra"], {},
                       "{csv}:3: 3 field(s), the header has 2 (delimiter ',')"),
        "missing column": (["image,tags", "0.png,a"], {"label_column": "labels"},
                           "{csv}: no column 'labels' (data.label_column); its columns: image, tags"),
        "one column (wrong delimiter)": (["image;tags", "0.png;a"], {},
                                         "{csv}: 1 column(s) ('image;tags') with delimiter ','; it needs an image "
                                         "path column and a labels column (is data.delimiter right?)"),
        "bad split value": (["image,tags,split", "0.png,a,train", "1.png,b,dev"], {"split_column": "split"},
                            "{csv}:3: split 'dev' (column 'split') is not one of train, training, val, valid, "
                            "validation, test, testing"),
        "no rows": (["image,tags"], {}, "{csv}: no rows below the header"),
        "one class": (["image,tags", "0.png,a", "1.png,a"], {},
                      "{csv}: 1 distinct label(s) in all; lossbench needs at least 2 classes"),
        "empty path": (["image,tags", ",a"], {}, "{csv}:2: empty image path"),
    }


@pytest.mark.parametrize("case", list(bad_csv_cases(None)))
def test_bad_csv_is_one_line_naming_file_and_row(case, tmp_path):
    rows, params, expected = bad_csv_cases(tmp_path)[case]
    for i in range(3):
        constant_image(tmp_path / "imgs" / f"{i}.png", 9 + i)
    csv_path = write_csv(tmp_path / "tags.csv", rows)
    root = tmp_path / "imgs"
    with pytest.raises(DataError) as err:
        build("image_csv", tmp_path, csv=str(csv_path), image_root=str(root), image_size=8, val_size=1,
              test_size=1, **params)
    assert str(err.value) == expected.format(csv=csv_path, root=root)


def test_duplicate_across_split_files_and_unreadable_image_name_file_and_row(tmp_path):
    for i in range(4):
        constant_image(tmp_path / "imgs" / f"{i}.png", 9 + i)
    train = write_csv(tmp_path / "train.csv", ["image,tags", "0.png,a", "1.png,b", "2.png,a"])
    test = write_csv(tmp_path / "test.csv", ["image,tags", "3.png,b", "1.png,b"])
    params = dict(csv=str(train), image_root=str(tmp_path / "imgs"), image_size=8, val_size=1)
    with pytest.raises(DataError) as err:
        build("image_csv", tmp_path, test_csv=str(test), **params)
    assert str(err.value) == f"{test}:3: image '1.png' is listed again (first at {train}:3)"
    (tmp_path / "imgs" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.raises(DataError) as err:
        build("image_csv", tmp_path, test_size=1, **params)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'imgs' / '2.png'}: unreadable image (") and "\n" not in message
    assert message.endswith(f"({train}:4)")


def test_csv_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^data.csv is not set"):
        build_datamodule("image_csv")
    with pytest.raises(ConfigError, match=r"^data.split_column and data.val_csv/data.test_csv are both set"):
        build_datamodule("image_csv", csv="a.csv", split_column="s", val_csv="v.csv")
    with pytest.raises(ConfigError, match=r"^data.multilabel='yes' is invalid; allowed: auto, true, false"):
        build_datamodule("image_csv", csv="a.csv", multilabel="yes")
    with pytest.raises(ConfigError, match=r"^data.val_size=1.5 is invalid; allowed: a count"):
        build_datamodule("image_csv", csv="a.csv", val_size=1.5)
    with pytest.raises(ConfigError, match=r"^data.classes: class 'a' is listed twice"):
        build_datamodule("image_csv", csv="a.csv", classes=["a", "b", "a"])
    tagged_images(tmp_path, {f"{i}.png": "ab"[i % 2] for i in range(4)})
    with pytest.raises(ConfigError, match=r"^data.val_size=2 \(2\) \+ data.test_size=2 \(2\) leave no training "
                                          r"examples of 4"):
        build("image_csv", tmp_path, csv=str(tmp_path / "tags.csv"), image_root=str(tmp_path / "imgs"),
              val_size=2, test_size=2)


# -- image_folder --------------------------------------------------------------------------------------


def test_folder_flat_layout_carves_stratified_splits(tmp_path):
    values = folder_tree(tmp_path / "pets", {"dog": 10, "cat": 20, "emu": 10})
    dm = build("image_folder", tmp_path, root=str(tmp_path / "pets"), image_size=8, val_size=0.2, test_size=0.1)
    assert dm.task == "multiclass" and dm.classes == ["cat", "dog", "emu"] and dm.input_shape == (3, 8, 8)
    assert dm.describe()["sizes"] == {"train": 28, "val": 8, "test": 4}
    # stratified: each split holds the classes in their 2:1:1 proportion
    assert torch.bincount(dm.splits["val"].y, minlength=3).tolist() == [4, 2, 2]
    assert torch.bincount(dm.splits["test"].y, minlength=3).tolist() == [2, 1, 1]
    for split in dm.splits.values():
        for value, target in zip(pixel_ids(split.x), split.y.tolist(), strict=True):
            assert dm.classes[target] == values[value]


def test_folder_split_folders_hidden_and_foreign_files_and_a_test_only_class(tmp_path, caplog):
    root = tmp_path / "data"
    train = folder_tree(root / "train", {"a": 3, "b": 4})
    valid = folder_tree(root / "valid", {"a": 1, "b": 1}, start=100)
    test = folder_tree(root / "test", {"a": 1, "c": 2}, start=200)
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    constant_image(root / "train" / ".ipynb_checkpoints" / "x.png", 1)  # a hidden folder is no class
    constant_image(root / "train" / "b" / ".hidden.png", 2)
    Image.new("RGB", (4, 4)).save(root / "train" / "b" / "old.bmp")
    with caplog.at_level(logging.WARNING, logger="lossbench"):
        dm = build("image_folder", tmp_path, root=str(root), image_size=8)
    assert dm.classes == ["a", "b", "c"] and dm.describe()["sizes"] == {"train": 7, "val": 2, "test": 3}
    for split, values in (("train", train), ("val", valid), ("test", test)):
        got = dict(zip(pixel_ids(dm.splits[split].x), dm.splits[split].y.tolist(), strict=True))
        assert {v: dm.classes[c] for v, c in got.items()} == values
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{root}: 2 file(s) that are not jpg/jpeg/png/gif/webp images skipped (e.g. " in warnings[0]
    first_c = root / "test" / "c" / "000.png"
    assert f"{first_c}: label 'c' is in test but never in training (2 test row(s))" in warnings


def test_folder_bad_input(tmp_path):
    with pytest.raises(ConfigError, match=r"^data.root is not set"):
        build_datamodule("image_folder")
    with pytest.raises(DataError) as err:
        build("image_folder", tmp_path, root=str(tmp_path / "nope"))
    assert str(err.value) == f"{tmp_path / 'nope'}: no such folder (data.root)"
    folder_tree(tmp_path / "one", {"only": 3})
    with pytest.raises(DataError) as err:
        build("image_folder", tmp_path, root=str(tmp_path / "one"))
    assert str(err.value) == (f"{tmp_path / 'one'}: 1 class folder(s) (only); an image folder holds one folder "
                              "per class, at least 2")
    folder_tree(tmp_path / "split" / "train", {"a": 3, "b": 3})
    (tmp_path / "split" / "test").mkdir()
    with pytest.raises(DataError) as err:
        build("image_folder", tmp_path, root=str(tmp_path / "split"))
    assert str(err.value) == (f"{tmp_path / 'split' / 'test'}: no class folders; an image folder holds one folder "
                              "of images per class")
    folder_tree(tmp_path / "broken", {"a": 3, "b": 3})
    bad = tmp_path / "broken" / "b" / "001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError) as err:
        build("image_folder", tmp_path, root=str(tmp_path / "broken"), val_size=1, test_size=1)
    assert str(err.value).startswith(f"{bad}: unreadable image (") and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^data.channels=2 is invalid; allowed: 3 \(RGB\) or 1 \(grayscale\)"):
        build_datamodule("image_folder", root="x", channels=2)


# -- arrays --------------------------------------------------------------------------------------------


def test_arrays_npz_features_classes_counts_and_train_normalisation(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(50, 4)).astype(np.float64)
    y = np.repeat([0, 1, 2, 3, 4], 10)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    dm = build("arrays", tmp_path, path=str(tmp_path / "train.npz"), val_size=10, test_size=0.2)
    assert dm.task == "multiclass" and dm.classes == ["0", "1", "2", "3", "4"] and dm.input_shape == (4,)
    assert dm.describe()["sizes"] == {"train": 30, "val": 10, "test": 10}
    for split in ("val", "test"):
        assert torch.bincount(dm.splits[split].y).tolist() == [2] * 5  # stratified per class
    train = dm.splits["train"]
    assert train.x.dtype == torch.float32
    rows = [int(np.flatnonzero((np.abs(x - r.numpy()) < 1e-5).all(1))[0]) for r in train.x]
    assert train.y.tolist() == y[rows].tolist()  # targets stay with their features
    reference = x[rows]  # float64 numpy: population mean/std per feature of the training split
    assert dm.normalization.scale == 1.0
    np.testing.assert_allclose(dm.normalization.mean, reference.mean(0), rtol=1e-6)
    np.testing.assert_allclose(dm.normalization.std, reference.std(0), rtol=1e-5)


def test_arrays_pt_nhwc_images_multilabel_test_file_and_file_classes(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(12, 6, 5, 3), dtype=np.uint8)  # NHWC
    y = (np.arange(12)[:, None] % np.array([2, 3, 4]) == 0).astype(np.float32)
    torch.save({"x": torch.from_numpy(images), "y": torch.from_numpy(y), "classes": ["two", "three", "four"]},
               tmp_path / "train.pt")
    test_images = rng.integers(0, 256, size=(3, 3, 6, 5), dtype=np.uint8)  # NCHW
    np.savez(tmp_path / "test.npz", x=test_images, y=np.eye(3, dtype=np.int64))
    dm = build("arrays", tmp_path, path=str(tmp_path / "train.pt"), test_path=str(tmp_path / "test.npz"),
               val_size=3, layout="auto")
    assert dm.task == "multilabel" and dm.classes == ["two", "three", "four"]
    assert dm.input_shape == (3, 6, 5) and dm.splits["train"].x.dtype == torch.uint8
    assert torch.equal(dm.splits["test"].x, torch.from_numpy(test_images))
    assert dm.splits["test"].y.tolist() == np.eye(3).tolist()
    together = torch.cat([dm.splits["train"].x, dm.splits["val"].x])
    expected = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    assert sorted(map(bytes, together.flatten(1).numpy())) == sorted(map(bytes, expected.flatten(1).numpy()))
    assert dm.normalization.scale == 255.0 and dm.normalization.mean == [0.485, 0.456, 0.406]  # RGB: ImageNet


def test_arrays_gray_images_resized_and_cached(tmp_path):
    x = np.stack([np.full((10, 10), v, dtype=np.uint8) for v in range(0, 240, 20)])  # (N, H, W)
    np.savez(tmp_path / "gray.npz", x=x, y=np.arange(12) % 2)
    dm = build("arrays", tmp_path, path=str(tmp_path / "gray.npz"), image_size=8, val_size=2, test_size=2,
               normalization="none")
    assert dm.input_shape == (1, 8, 8) and dm.normalization.scale == 255.0 and dm.normalization.mean == [0.0]
    values = sorted(torch.cat([s.x[:, 0, 0, 0] for s in dm.splits.values()]).tolist())
    assert values == list(range(0, 240, 20))
    assert len(list((tmp_path / "cache").glob("gray-8px-*.pt"))) == 1


BAD_ARRAYS = {
    "nan row": (dict(x=np.array([[0.0, 1.0], [2.0, np.nan], [1.0, 1.0]]), y=np.array([0, 1, 1])),
                "{f}: x row 1 has NaN (features must be finite)"),
    "inf row": (dict(x=np.array([[0.0, 1.0], [2.0, 1.0], [1.0, -np.inf]]), y=np.array([0, 1, 1])),
                "{f}: x row 2 has -inf (features must be finite)"),
    "ragged npz": (dict(x=np.array([np.zeros(2), np.zeros(3)], dtype=object), y=np.array([0, 1])),
                   "{f}: x is an object array (ragged rows, or mixed types); lossbench does not unpickle: save it "
                   "as one numeric array (N, ...)"),
    "length mismatch": (dict(x=np.zeros((4, 2)), y=np.array([0, 1, 1])), "{f}: x has 4 rows but y has 3"),
    "missing y": (dict(x=np.zeros((4, 2)), labels=np.array([0, 1, 1, 0])),
                  "{f}: no entry 'y' (data.y_key); it holds: x, labels"),
    "fractional class": (dict(x=np.zeros((3, 2)), y=np.array([0.0, 1.5, 1.0])),
                         "{f}: y row 1 is 1.5; class indices are integers >= 0"),
    "negative class": (dict(x=np.zeros((3, 2)), y=np.array([0, 1, -1])),
                       "{f}: y row 2 is -1; class indices are integers >= 0"),
    "nan target": (dict(x=np.zeros((3, 2)), y=np.array([0.0, np.nan, 1.0])),
                   "{f}: y row 1 is not finite (NaN or inf)"),
    "soft multi-label": (dict(x=np.zeros((3, 2)), y=np.array([[0, 1], [1, 1], [0.5, 0]])),
                         "{f}: y row 2 holds 0.5; a multi-label y (N, C) holds only 0 and 1"),
    "text features": (dict(x=np.array([["a"], ["b"]]), y=np.array([0, 1])),
                      "{f}: x has dtype <U1; allowed: numbers or booleans"),
    "one class": (dict(x=np.zeros((3, 2)), y=np.array([0, 0, 0])), "{f}: 1 class(es); lossbench needs at least 2"),
}


@pytest.mark.parametrize("case", list(BAD_ARRAYS))
def test_bad_arrays_are_one_line_naming_file_and_row(case, tmp_path):
    arrays, expected = BAD_ARRAYS[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as err:
        build("arrays", tmp_path, path=str(path), val_size=1, test_size=1)
    assert str(err.value) == expected.format(f=path)


def test_bad_arrays_across_files_and_pt_files(tmp_path):
    train, test = tmp_path / "train.npz", tmp_path / "test.npz"
    np.savez(train, x=np.zeros((6, 3)), y=np.array([0, 1, 0, 1, 0, 1]))
    np.savez(test, x=np.zeros((2, 4)), y=np.array([0, 1]))
    with pytest.raises(DataError) as err:
        build("arrays", tmp_path, path=str(train), test_path=str(test))
    assert str(err.value) == f"{test}: x rows are torch.float32 (4,), those of {train} torch.float32 (3,)"
    np.savez(test, x=np.zeros((2, 3)), y=np.array([0, 7]))
    with pytest.raises(DataError) as err:
        build("arrays", tmp_path, path=str(train), test_path=str(test), classes=["a", "b"])
    assert str(err.value) == f"{test}: y row 1 is 7, not a class: data.classes names 2 classes (0..1)"
    ragged = tmp_path / "ragged.pt"
    torch.save({"x": [torch.zeros(3), torch.zeros(3), torch.zeros(2)], "y": torch.tensor([0, 1, 0])}, ragged)
    with pytest.raises(DataError) as err:
        build("arrays", tmp_path, path=str(ragged))
    assert str(err.value) == f"{ragged}: x is ragged: row 2 has shape (2,), row 0 has (3,)"
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], listing)
    with pytest.raises(DataError) as err:
        build("arrays", tmp_path, path=str(listing))
    assert str(err.value) == f"{listing}: holds a list; expected a dict such as {{'x': tensor, 'y': tensor}} (torch.save)"
    with pytest.raises(DataError) as err:
        build("arrays", tmp_path, path=str(tmp_path / "x.csv"))
    assert str(err.value) == f"{tmp_path / 'x.csv'}: no such file"
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(DataError) as err:
        build("arrays", tmp_path, path=str(tmp_path / "x.csv"))
    assert str(err.value) == (f"{tmp_path / 'x.csv'}: unsupported file type '.csv'; allowed: .npz (numpy.savez) or "
                              ".pt (torch.save)")


def test_arrays_test_label_training_never_has_is_a_warning(tmp_path, caplog):
    np.savez(tmp_path / "train.npz", x=np.arange(8.0).reshape(8, 1), y=np.array([0, 1] * 4))
    np.savez(tmp_path / "test.npz", x=np.zeros((3, 1)), y=np.array([1, 2, 2]))
    with caplog.at_level(logging.WARNING, logger="lossbench"):
        dm = build("arrays", tmp_path, path=str(tmp_path / "train.npz"), test_path=str(tmp_path / "test.npz"),
                   val_size=2)
    assert dm.num_classes == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{tmp_path / 'test.npz'}: y row 1: label '2' is in test but never in training "
                        "(2 test row(s))"]


# -- carving and normalisation -------------------------------------------------------------------------


def test_carve_gives_every_label_with_two_positives_one_on_each_side():
    rng = np.random.default_rng(0)
    y = (rng.random((1000, 6)) < [0.5, 0.2, 0.05, 0.01, 0.003, 0.0]).astype(np.float32)
    y[[3, 500], 5] = 1  # a label with exactly two examples
    y[777, :] = 0
    y[777, 4] = 1
    rare = y[:, 4].sum()
    kept, carved = carve(torch.from_numpy(y), 6, 100, seed=0)
    assert len(carved) == 100 and len(kept) == 900
    assert sorted(torch.cat([kept, carved]).tolist()) == list(range(1000))
    on_carved, totals = y[carved.numpy()].sum(0), y.sum(0)
    assert (on_carved >= 1).all() and (totals - on_carved >= 1).all(), (on_carved, totals)
    # still stratified: the common labels keep their share of about 10%
    assert abs(on_carved[0] / totals[0] - 0.1) < 0.02 and abs(on_carved[1] / totals[1] - 0.1) < 0.03
    assert rare >= 2


def test_cover_keeps_a_single_example_for_training_and_repairs_by_hand_example():
    # label 0: 5 positives, label 1: 2 positives both carved, label 2: 1 positive carved
    labels = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0], [0, 0, 0]],
                      dtype=bool)
    carved = np.array([0, 0, 0, 1, 1, 1, 0, 0], dtype=bool)
    cover(labels, carved)
    assert uncovered(labels, carved) == []
    assert not carved[5]  # the one example of label 2 went back to training
    assert labels[carved, 1].sum() == 1 and labels[~carved, 1].sum() == 1
    assert carved.sum() == 3  # the size kept: one example moved the other way for each move


def test_single_label_carving_is_exact_per_class():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    kept, carved = carve(y, 3, 10, seed=4)
    assert torch.bincount(y[carved], minlength=3).tolist() == [5, 3, 2]


def test_count_of_and_train_normalisation_of_images():
    assert count_of("val_size", 0.1, 95) == 10 and count_of("val_size", 7, 95) == 7
    assert count_of("val_size", 0.001, 95) == 1
    for bad in (0, 1.0, -3, True, "x"):
        with pytest.raises(ConfigError):
            count_of("val_size", bad, 95)
    x = torch.randint(0, 256, (30, 2, 5, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x[:, 1] = 7  # a constant channel: std 1, not 0
    norm = normalization("train", x)
    reference = x.numpy().astype(np.float64) / 255
    assert norm.scale == 255.0
    np.testing.assert_allclose(norm.mean, reference.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(norm.std[0], reference[:, 0].std(), rtol=1e-9)
    assert norm.std[1] == 1.0
    with pytest.raises(ConfigError, match=r"data.normalization=imagenet needs 3-channel"):
        normalization("imagenet", x)
    assert normalization("auto", x).mean == norm.mean  # 2 channels: not ImageNet
