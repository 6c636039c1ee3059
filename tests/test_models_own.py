"""Your own models: model=timm (tiny timm test architectures, never pretrained weights), model=custom with
``_target_``, and ``member_obstacles`` (what keeps a model from training as stacked members)."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from lossbench.build import build_datamodule, build_module
from lossbench.errors import ConfigError
from lossbench.models import build_model, member_obstacles

from conftest import compose_config

PACKAGE = "lossbench_test_user_nets"


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """A user's package ``lossbench_test_user_nets`` importable from ``tmp_path``."""
    folder = tmp_path / PACKAGE
    folder.mkdir()
    (folder / "__init__.py").write_text(textwrap.dedent('''
        from torch import nn
        from math import prod


        class MyNet(nn.Module):
            def __init__(self, in_shape, num_outputs, width=8):
                super().__init__()
                self.width = width
                self.body = nn.Sequential(nn.Flatten(), nn.Linear(prod(in_shape), width), nn.ReLU(),
                                          nn.Linear(width, num_outputs))

            def forward(self, x):
                return self.body(x)


        def make_net(**kwargs):
            return MyNet(**kwargs)


        class WrongSignature(nn.Module):
            def __init__(self, shape, classes):
                super().__init__()


        def not_a_module(in_shape, num_outputs):
            return [in_shape, num_outputs]


        def raises(in_shape, num_outputs):
            raise ValueError("width must be even\\nsecond line")


        NUMBER = 3
        '''))
    (folder / "broken.py").write_text("import a_module_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith(PACKAGE)]:
        del sys.modules[name]


def test_timm_sets_channels_and_outputs_from_the_dataset():
    net = build_model("timm", (1, 32, 32), 7, arch="test_resnet")
    first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 7)
    assert net.num_classes == 7


def test_timm_with_the_partition_head_gets_the_extra_count_output(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(20, 3, 16, 16), dtype=np.uint8)
    y = (np.arange(20)[:, None] % np.array([2, 3, 5, 7]) == 0).astype(np.float32)
    np.savez(tmp_path / "imgs.npz", x=x, y=y)
    cfg = compose_config(["data=arrays", f"data.path={tmp_path / 'imgs.npz'}", "data.val_size=4", "data.test_size=4",
                          "model=timm", "model.arch=test_efficientnet_gn", "loss=partition_softmax"])
    dm = build_datamodule(cfg)
    dm.setup()
    module = build_module(cfg, dm)
    assert module.head.extra_outputs == 1
    assert module(torch.from_numpy(x[:3])).shape == (3, 4 + 1)
    assert module.net.num_classes == 5


def test_timm_errors_are_one_line():
    with pytest.raises(ConfigError) as err:
        build_model("timm", (3, 32, 32), 4, arch="resnet1")
    assert str(err.value).startswith("model.arch='resnet1' is not a timm architecture; close: ")
    assert "resnet18" in str(err.value)
    with pytest.raises(ConfigError) as err:
        build_model("timm", (32,), 4, arch="resnet18")
    assert str(err.value) == "model=timm needs image inputs (C, H, W); this dataset gives shape (32,)"
    with pytest.raises(ConfigError) as err:
        build_model("timm", (3, 32, 32), 4, arch="test_resnet", not_an_argument=3)
    assert str(err.value).startswith("model=timm model.arch=test_resnet: ") and "not_an_argument" in str(err.value)
    with pytest.raises(ConfigError, match=r"^model.pretrained='yes' is invalid; allowed: true, false$"):
        build_model("timm", (3, 32, 32), 4, arch="test_resnet", pretrained="yes")


def test_member_obstacles_name_batch_norm_and_dropout_layers():
    resnet = build_model("timm", (3, 32, 32), 4, arch="test_resnet")
    obstacles = member_obstacles(resnet)
    assert obstacles[:3] == [f"{name} (BatchNorm2d: running statistics)" for name in ("conv1.1", "conv1.4", "bn1")]
    assert all("BatchNorm2d" in o for o in obstacles)
    assert member_obstacles(build_model("timm", (3, 32, 32), 4, arch="test_efficientnet_gn")) == []
    # convnext holds Dropout(p=0) layers: no obstacle until a rate is set
    assert member_obstacles(build_model("timm", (3, 32, 32), 4, arch="test_convnext")) == []
    dropping = member_obstacles(build_model("timm", (3, 32, 32), 4, arch="test_convnext", drop_path_rate=0.2,
                                            drop_rate=0.1))
    assert any("DropPath p=" in o for o in dropping) and "head.drop (Dropout p=0.1)" in dropping
    assert member_obstacles(build_model("mlp", (5,), 3, hidden=[4], dropout=0.5)) == ["3 (Dropout p=0.5)"]
    assert member_obstacles(build_model("cnn", (1, 28, 28), 3)) == []
    no_stats = torch.nn.Sequential(torch.nn.BatchNorm1d(4, track_running_stats=False))
    assert member_obstacles(no_stats) == []  # batch statistics only: functional


def test_custom_target_builds_the_users_module(user_package):
    net = build_model("custom", (2, 3), 5, _target_=f"{PACKAGE}.MyNet", width=6)
    assert type(net).__name__ == "MyNet" and net.width == 6
    assert net(torch.zeros(4, 2, 3)).shape == (4, 5)
    assert build_model("custom", (4,), 3, _target_=f"{PACKAGE}.make_net")(torch.zeros(1, 4)).shape == (1, 3)


@pytest.mark.parametrize(("target", "kwargs", "message"), [
    ("nope_pkg_xyz.Net", {}, "model._target_=nope_pkg_xyz.Net: no module 'nope_pkg_xyz' can be imported (is it "
                             "installed, or on PYTHONPATH / in the directory you launch from?)"),
    (f"{PACKAGE}.Missing", {}, f"model._target_={PACKAGE}.Missing: {PACKAGE} has no attribute 'Missing'"),
    (f"{PACKAGE}.broken.Net", {}, f"model._target_={PACKAGE}.broken.Net: importing {PACKAGE}.broken failed (No "
                                  "module named 'a_module_that_is_not_installed')"),
    (f"{PACKAGE}.WrongSignature", {}, f"model._target_={PACKAGE}.WrongSignature(shape, classes) does not take "
                                      "in_shape, num_outputs; lossbench calls it with in_shape=(C, H, W) or (D,), "
                                      "num_outputs=<classes + head outputs> and the other model.* keys"),
    (f"{PACKAGE}.MyNet", {"depth": 3}, f"model._target_={PACKAGE}.MyNet(in_shape, num_outputs, width=8) does not "
                                       "take depth; lossbench calls it with"),
    (f"{PACKAGE}.not_a_module", {}, f"model._target_={PACKAGE}.not_a_module returned a list, not a torch.nn.Module"),
    (f"{PACKAGE}.raises", {}, f"model._target_={PACKAGE}.raises: building it failed (ValueError: width must be even)"),
    (f"{PACKAGE}.NUMBER", {}, f"model._target_={PACKAGE}.NUMBER is a int, not a class or function"),
    ("not a path", {}, "model._target_='not a path' is not a dotted path such as my_pkg.models.MyNet"),
    ("???", {}, "model._target_ is not set; allowed: the dotted path of an nn.Module class or function taking "
                "in_shape and num_outputs, e.g. model._target_=my_pkg.MyNet"),
])
def test_custom_target_errors_are_one_line(target, kwargs, message, user_package):
    with pytest.raises(ConfigError) as err:
        build_model("custom", (4,), 3, _target_=target, **kwargs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_target_with_another_model_name_is_refused():
    with pytest.raises(ConfigError) as err:
        build_model("mlp", (4,), 3, _target_="x.Y", hidden=[4])
    assert str(err.value) == "model._target_ is set but model=mlp; allowed: model=custom model._target_=my_pkg.MyNet"
