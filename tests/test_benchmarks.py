"""The arithmetic of the fidelity benchmark (its training runs are benchmarks, not tests)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fidelity  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


def run(value: float, precision: str = "32-true") -> dict:
    return {"val": {"val/mse": value}, "precision": precision, "hardware": {"device": "test"}, "wall_time_s": 10.0}


def test_compare_averages_over_seeds_and_measures_the_spread_of_every_fp32_run():
    runs = {"fp32": [run(1.0), run(1.2), run(0.8)], "default": [run(1.02, "bf16-mixed"), run(1.22), run(0.82)]}
    (row,) = fidelity.compare("autoencoder", runs, (30, None, None), n_seeds=3)
    assert row["fp32"] == pytest.approx(1.0) and row["default"] == pytest.approx(1.02)
    assert row["rel_diff"] == pytest.approx(0.02) and row["ok"]
    assert row["seed_spread"] == pytest.approx(0.4)
    assert row["default_precision"] == "bf16-mixed"


def test_compare_with_one_seed_uses_the_extra_fp32_run_only_for_the_noise_floor():
    runs = {"fp32": [run(1.0), run(1.1)], "default": [run(1.06)]}
    (row,) = fidelity.compare("autoencoder", runs, (8, 12, 4), n_seeds=1)
    assert row["fp32"] == pytest.approx(1.0)
    assert row["rel_diff"] == pytest.approx(0.06) and not row["ok"]
    assert row["seed_spread"] == pytest.approx(0.1 / 1.05)


def test_length_follows_the_plan_unless_overridden_and_zero_means_the_whole_split():
    args = argparse.Namespace(epochs=None, limit_train_batches=None, limit_val_batches=None)
    assert fidelity.length("classification", args) == fidelity.LENGTH["classification"]
    args = argparse.Namespace(epochs=3, limit_train_batches=0, limit_val_batches=5)
    assert fidelity.length("autoencoder", args) == (3, None, 5)


def test_a_finished_run_is_reused_only_if_made_with_the_same_overrides():
    metrics = {"overrides": ["experiment=autoencoder", "trainer.deterministic=True", "++trainer.limit_val_batches=4",
                             "~logger=null", "data.cache_dir=/a", "fp32=True", "seed=42"]}
    same = ["experiment=autoencoder", "trainer.deterministic=warn", "++trainer.limit_val_batches=4", "~logger",
            "data.cache_dir=/b", "fp32=true", "seed=42", "hydra.sweep.dir=/x"]
    assert fidelity.made_with(metrics, same)  # determinism, cache folder and hydra settings do not change results
    assert not fidelity.made_with(metrics, [*same[:2], "++trainer.limit_val_batches=1.0", *same[3:]])
    assert not fidelity.made_with(metrics, [*same, "data.root=/elsewhere"])
    assert not fidelity.made_with(metrics, [*same[:-2], "seed=43"])
