"""The CUDA path: each section trains on the GPU in the default precision (bf16-mixed on Ampere and newer),
and bf16 does not move the metrics away from fp32. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from voc_dl.hardware import resolve_precision
from voc_dl.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_auto_precision_on_cuda_is_mixed():
    expected = "bf16-mixed" if torch.cuda.is_bf16_supported(including_emulation=False) else "16-mixed"
    assert resolve_precision("auto", False, "gpu") == expected
    assert resolve_precision("auto", True, "gpu") == "32-true"


@pytest.mark.parametrize("experiment", ["autoencoder", "classification", "segmentation"])
def test_each_section_trains_on_the_gpu(compose_cfg, experiment):
    result = train(compose_cfg([f"experiment={experiment}", "trainer=gpu", "debug=tiny", "data.batch_size=8"]))
    assert result["status"] == "ok" and result["precision"] == resolve_precision("auto", False, "gpu")
    assert all(v == v for v in result["val"].values()), "no NaN metric under mixed precision"


def test_mixed_precision_stays_close_to_fp32(compose_cfg, tmp_path):
    def run(fp32: bool) -> dict:
        cfg = compose_cfg(["experiment=segmentation", "trainer=gpu", "debug=tiny", "data.batch_size=8",
                           f"fp32={str(fp32).lower()}", f"paths.run_dir={tmp_path / str(fp32)}"])
        return train(cfg)["val"]

    full, mixed = run(True), run(False)
    for key, value in full.items():
        assert mixed[key] == pytest.approx(value, rel=0.05, abs=0.01), key
