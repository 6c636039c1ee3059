"""Label perturbations (lossbench/noise.py, configs/noise/): realised rates against the requested ones within
sampling error, the exact shape of each corruption, the long-tail formula, fixed labels across runs and
strategies, clean validation/test splits, validation errors, and the summary entry of a real run.

Sampling error: a realised Bernoulli rate over n independent draws has standard deviation
sigma = sqrt(r (1 - r) / n); every check allows 4 sigma (a chance of about 6e-5 of failing a correct
implementation, and the draws are seeded, so a test that passes once always passes).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lossbench.build import build_datamodule
from lossbench.errors import ConfigError
from lossbench.noise import MNIST_PAIRS

from conftest import TINY, TINY_SYNTHETIC, compose_config, run_cli

MULTILABEL = ["data=synthetic", "data.train_size=6000"]
SINGLE = ["data=synthetic", "data.multilabel=false", "data.train_size=6000"]


def datamodule(overrides):
    dm = build_datamodule(compose_config(overrides))
    dm.setup()
    return dm


def clean_and_noisy(data, noise):
    return datamodule([*data, "noise=none"]), datamodule([*data, *noise])


def within_sampling_error(realised, rate, n, sigmas=4.0):
    return abs(realised - rate) <= sigmas * math.sqrt(rate * (1 - rate) / n)


# -- single-label -------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_symmetric_noise_changes_the_requested_share_to_uniformly_drawn_other_classes(rate):
    clean, noisy = clean_and_noisy(SINGLE, ["noise=symmetric", f"noise.rate={rate}"])
    y, z = clean.splits["train"].y.numpy(), noisy.splits["train"].y.numpy()
    changed = y != z
    assert within_sampling_error(changed.mean(), rate, len(y)), changed.mean()
    record = noisy.noise_record
    assert record["changed"] == changed.sum() and record["realised_rate"] == pytest.approx(changed.mean())
    # the new class is uniform over the C - 1 others: every (old, new) cell near n_old * rate / (C - 1)
    c = clean.num_classes
    for old in range(c):
        n_old = (y == old).sum()
        p = rate / (c - 1)
        for new in range(c):
            if new != old:
                count = ((y == old) & (z == new)).sum()
                assert abs(count - n_old * p) <= 4 * math.sqrt(n_old * p * (1 - p)) + 1, (old, new, count)


def test_symmetric_noise_on_mnist_and_nested_across_rates(mnist_root):
    data = ["data=mnist", f"data.root={mnist_root}"]
    clean = datamodule([*data, "noise=none"]).splits["train"].y
    low = datamodule([*data, "noise=symmetric", "noise.rate=0.2"]).splits["train"].y
    high = datamodule([*data, "noise=symmetric", "noise.rate=0.4"]).splits["train"].y
    for rate, z in ((0.2, low), (0.4, high)):
        assert within_sampling_error((z != clean).double().mean().item(), rate, len(clean))
    flipped_low = low != clean
    assert torch.equal(high[flipped_low], low[flipped_low])  # what 20 % flips, 40 % flips the same way


def test_pairflip_on_mnist_uses_patrini_map(mnist_root):
    clean, noisy = clean_and_noisy(["data=mnist", f"data.root={mnist_root}"], ["noise=asymmetric", "noise.rate=0.3"])
    y, z = clean.splits["train"].y.numpy(), noisy.splits["train"].y.numpy()
    assert noisy.noise_record["name"] == "pairflip"  # asymmetric is an alias
    target = dict(((7, 1), (2, 7), (5, 6), (6, 5), (3, 8)))  # Patrini et al. 2017, written out again
    assert noisy.noise_record["pairs_used"] == [list(p) for p in MNIST_PAIRS] and dict(MNIST_PAIRS) == target
    changed = y != z
    assert set(np.unique(y[changed])) == set(target)
    for source, to in target.items():
        assert (z[changed & (y == source)] == to).all()
    in_sources = np.isin(y, list(target))
    assert within_sampling_error(changed[in_sources].mean(), 0.3, in_sources.sum())
    assert noisy.noise_record["rate_in_sources"] == pytest.approx(changed[in_sources].mean())
    assert noisy.noise_record["realised_rate"] == pytest.approx(changed.mean())
    assert noisy.noise_record["source_share"] == pytest.approx(in_sources.mean())


def test_pairflip_default_for_other_data_is_next_class_and_pairs_are_configurable():
    clean, noisy = clean_and_noisy(SINGLE, ["noise=pairflip", "noise.rate=0.25"])
    y, z = clean.splits["train"].y.numpy(), noisy.splits["train"].y.numpy()
    changed = y != z
    assert (z[changed] == (y[changed] + 1) % 10).all()
    assert within_sampling_error(changed.mean(), 0.25, len(y))
    custom = datamodule([*SINGLE, "noise=pairflip", "noise.rate=0.5", "noise.pairs=[[0,9],[4,2]]"])
    z = custom.splits["train"].y.numpy()
    changed = y != z
    assert set(np.unique(y[changed])) == {0, 4}
    assert (z[changed & (y == 0)] == 9).all() and (z[changed & (y == 4)] == 2).all()


# -- multi-label --------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.3, 0.6])
def test_missing_drops_the_requested_share_of_positives_only(rate):
    clean, noisy = clean_and_noisy(MULTILABEL, ["noise=missing", f"noise.rate={rate}"])
    y, z = clean.splits["train"].y.numpy(), noisy.splits["train"].y.numpy()
    assert not ((y == 0) & (z == 1)).any()  # nothing switched on
    dropped = ((y == 1) & (z == 0)).sum()
    assert within_sampling_error(dropped / y.sum(), rate, y.sum())
    assert noisy.noise_record["realised_rate"] == pytest.approx(dropped / y.sum())


def test_false_positive_switches_the_requested_share_of_negatives_only():
    # the synthetic data draw their labels from uniforms too: the noise must use its own stream
    clean, noisy = clean_and_noisy(MULTILABEL, ["noise=false_positive", "noise.rate=0.05"])
    y, z = clean.splits["train"].y.numpy(), noisy.splits["train"].y.numpy()
    assert not ((y == 1) & (z == 0)).any()
    switched, negatives = ((y == 0) & (z == 1)).sum(), (y == 0).sum()
    assert within_sampling_error(switched / negatives, 0.05, negatives)
    assert noisy.noise_record["realised_rate"] == pytest.approx(switched / negatives)


def test_single_positive_keeps_one_uniformly_drawn_positive():
    clean, noisy = clean_and_noisy(MULTILABEL, ["noise=single_positive"])
    y, z = clean.splits["train"].y.numpy(), noisy.splits["train"].y.numpy()
    k = y.sum(axis=1)
    assert (z <= y).all()  # only original positives survive
    np.testing.assert_array_equal(z.sum(axis=1), np.minimum(k, 1))
    assert noisy.noise_record["realised_rate"] == pytest.approx((k - np.minimum(k, 1)).sum() / k.sum())
    rows = k == 3  # which of the three positives is kept: each about a third of the time
    position = np.array([np.flatnonzero(yr).tolist().index(np.flatnonzero(zr)[0]) for yr, zr in zip(y[rows], z[rows], strict=True)])
    for j in range(3):
        assert within_sampling_error((position == j).mean(), 1 / 3, rows.sum()), j


# -- long tail ----------------------------------------------------------------------------------------
def expected_longtail(available, rho):
    """Cui et al. 2019: n_c = n_head * rho^(-c / (C - 1)), n_head the largest head every class can supply."""
    c = np.arange(len(available))
    head = np.floor(np.min(np.asarray(available) * rho ** (c / (len(available) - 1))))
    return np.floor(head * rho ** (-c / (len(available) - 1))).astype(int)


def _row_keys(x):
    return {row.tobytes() for row in x.numpy()}


@pytest.mark.parametrize("rho", [1.0, 10.0, 50.0])
def test_longtail_single_label_class_counts_follow_the_formula(rho):
    clean, noisy = clean_and_noisy(SINGLE, ["noise=longtail", f"noise.imbalance_ratio={rho}"])
    y, z = clean.splits["train"].y.numpy(), noisy.splits["train"].y.numpy()
    expected = expected_longtail(np.bincount(y, minlength=10), rho)
    np.testing.assert_array_equal(np.bincount(z, minlength=10), expected)
    assert expected[0] / expected[-1] == pytest.approx(rho, rel=0.05)
    assert _row_keys(noisy.splits["train"].x) <= _row_keys(clean.splits["train"].x)  # a subset, labels intact
    assert noisy.noise_record["realised_rate"] == pytest.approx(1 - len(z) / len(y))


def test_longtail_multilabel_groups_by_the_tail_most_positive():
    clean, noisy = clean_and_noisy(MULTILABEL, ["noise=longtail", "noise.imbalance_ratio=10"])
    y, z = clean.splits["train"].y.numpy(), noisy.splits["train"].y.numpy()

    def groups(labels):  # the highest class index a sample carries, -1 for none
        return np.array([np.flatnonzero(row).max() if row.any() else -1 for row in labels])

    g_before, g_after = groups(y), groups(z)
    expected = expected_longtail([(g_before == c).sum() for c in range(10)], 10.0)
    np.testing.assert_array_equal([(g_after == c).sum() for c in range(10)], expected)
    labels = z.sum(axis=0)
    assert (np.diff(labels) < 0).all()  # label frequencies decay from head to tail as well
    empty = (g_before == -1).sum()
    assert (g_after == -1).sum() == math.floor(empty * expected.sum() / (g_before >= 0).sum())
    assert noisy.noise_record["label_counts_after"] == labels.astype(int).tolist()


def test_longtail_too_steep_for_the_data_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^noise=longtail with imbalance_ratio=1e\+06 leaves the tail class 9 "
                                          r"without training samples .*$"):
        datamodule([*SINGLE, "noise=longtail", "noise.imbalance_ratio=1e6"])


# -- the same labels for every strategy and seed; clean validation and test ---------------------------
@pytest.mark.parametrize(("data", "noise"), [
    (SINGLE, ["noise=symmetric", "noise.rate=0.4"]),
    (SINGLE, ["noise=pairflip"]),
    (MULTILABEL, ["noise=missing"]),
    (MULTILABEL, ["noise=single_positive"]),
    (MULTILABEL, ["noise=false_positive"]),
    (MULTILABEL, ["noise=longtail"]),
])
def test_noise_is_fixed_by_noise_seed_and_leaves_validation_and_test_clean(data, noise):
    base = datamodule([*data, *noise])
    clean = datamodule([*data, "noise=none"])
    other_run = datamodule([*data, *noise, "seed=7", "loss=focal", "model.hidden=[16]"])
    assert torch.equal(other_run.splits["train"].y, base.splits["train"].y)
    assert other_run.noise_record["train_labels_sha1"] == base.noise_record["train_labels_sha1"]
    other_noise = datamodule([*data, *noise, "noise.seed=1"])
    assert not torch.equal(other_noise.splits["train"].y, base.splits["train"].y)
    assert not torch.equal(base.splits["train"].y, clean.splits["train"].y)
    for split in ("val", "test"):
        assert torch.equal(base.splits[split].y, clean.splits[split].y), split
        assert torch.equal(base.splits[split].x, clean.splits[split].x), split


# -- validation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "message"), [
    ([*MULTILABEL, "noise=symmetric"], "noise=symmetric needs single-label data, but the data are multilabel; "
                                       "for multi-label data use noise=missing, single_positive, false_positive or longtail"),
    ([*SINGLE, "noise=missing"], "noise=missing needs multi-label data, but the data are multiclass; "
                                 "for single-label data use noise=symmetric, pairflip or longtail"),
    ([*SINGLE, "noise=symmetric", "noise.rate=1.5"], r"noise.rate=1.5 is invalid; allowed: a number in \[0, 1\]"),
    ([*MULTILABEL, "noise=missing", "noise.rate=-0.1"], r"noise.rate=-0.1 is invalid; allowed: a number in \[0, 1\]"),
    ([*SINGLE, "noise=symmetric", "noise.seed=-1"], "noise.seed=-1 is invalid; allowed: an integer >= 0"),
    ([*SINGLE, "noise=longtail", "noise.imbalance_ratio=0.5"], "noise.imbalance_ratio=0.5 is invalid; allowed: a number >= 1"),
    ([*SINGLE, "noise=pairflip", "noise.pairs=[[3,3]]"], r"noise.pairs: \[3, 3\] is invalid; allowed: two different "
                                                         r"class indices in 0..9"),
    ([*SINGLE, "noise=pairflip", "noise.pairs=[[1,12]]"], r"noise.pairs: \[1, 12\] is invalid"),
    ([*SINGLE, "noise=pairflip", "noise.pairs=[[1,2],[1,3]]"], "noise.pairs: a source class appears twice"),
    ([*SINGLE, "noise=pairflip", "noise.pairs=[1,2]"], "noise.pairs=.* is invalid; allowed: null"),
    ([*SINGLE, "noise=symmetric", "+noise.pairs=[[1,2]]"], "noise.pairs is not a setting of noise=symmetric; "
                                                           "allowed: rate, seed"),
])
def test_bad_noise_settings_stop_the_run_with_one_line(overrides, message, tmp_path):
    from lossbench.engine import train

    with pytest.raises(ConfigError, match=f"^{message}") as err:
        train(compose_config([*overrides, *TINY]), tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "summary.json").exists()


def test_cli_names_the_wrong_task_in_one_line(tmp_path):
    result = run_cli(["data=synthetic", "noise=symmetric", *TINY_SYNTHETIC, *TINY], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: noise=symmetric needs single-label data")


# -- the summary entry, through real training runs --------------------------------------------------
def test_summary_records_the_noise_and_every_strategy_trains_on_the_same_labels(tmp_path):
    from lossbench.engine import train

    data = ["data=synthetic", "data.multilabel=false", *TINY_SYNTHETIC, *TINY, "noise=symmetric", "noise.rate=0.4"]
    first = train(compose_config([*data, "loss=cross_entropy", "seed=0"]), tmp_path / "ce")
    second = train(compose_config([*data, "loss=gce", "seed=3"]), tmp_path / "gce")
    assert first["status"] == second["status"] == "completed"
    entry = first["noise"]
    assert {k: entry[k] for k in ("name", "rate", "seed", "unit")} == {
        "name": "symmetric", "rate": 0.4, "seed": 0, "unit": "training samples"}
    assert entry["out_of"] == 512 and within_sampling_error(entry["realised_rate"], 0.4, 512)
    assert entry["changed"] == round(entry["realised_rate"] * 512)
    assert second["noise"]["train_labels_sha1"] == entry["train_labels_sha1"]
    assert second["noise"] == {**entry}
    clean = train(compose_config([*data[:-2], "loss=cross_entropy"]), tmp_path / "clean")
    assert clean["noise"] == {"name": "none", "realised_rate": 0.0, "train_size": 512,
                              "train_labels_sha1": clean["noise"]["train_labels_sha1"]}
    assert clean["noise"]["train_labels_sha1"] != entry["train_labels_sha1"]


def test_members_record_the_noise(tmp_path):
    from lossbench.members import train_members

    cfg = compose_config([*MULTILABEL[:1], *TINY_SYNTHETIC, *TINY, "noise=missing", "noise.rate=0.6",
                          "seeds=[0,1]", "trainer.checkpoint=false"])
    summaries = train_members(cfg, tmp_path)
    assert len(summaries) == 2
    assert summaries[0]["noise"] == summaries[1]["noise"]
    assert summaries[0]["noise"]["name"] == "missing" and summaries[0]["noise"]["unit"] == "positive labels"
