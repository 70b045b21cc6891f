"""Metrics and losses against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics import MeanAbsoluteError, MeanSquaredError
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from tests.conftest import ADAM
from voc_dl.tasks.classification import classification_metrics
from voc_dl.tasks.reconstruction import ReconstructionTask
from voc_dl.tasks.segmentation import masked_bce, per_image_dice_iou, segmentation_metrics, soft_dice_loss

# float results that depend on the CPU's kernels: `make test` runs these again under the AVX2 caps
pytestmark = pytest.mark.numerics


def test_mse_mae_psnr_by_hand():
    pred = torch.tensor([[0.0, 0.5], [1.0, 0.25]])
    target = torch.tensor([[0.5, 0.5], [0.0, 0.25]])
    # errors 0.5, 0, 1, 0 -> MSE (0.25 + 1) / 4, MAE 1.5 / 4, PSNR 10 log10(1 / MSE)
    assert MeanSquaredError()(pred.reshape(-1), target.reshape(-1)).item() == pytest.approx(0.3125)
    assert MeanAbsoluteError()(pred.reshape(-1), target.reshape(-1)).item() == pytest.approx(0.375)
    psnr = PeakSignalNoiseRatio(data_range=1.0)(pred, target).item()
    assert psnr == pytest.approx(10 * math.log10(1 / 0.3125), rel=1e-5)


def test_classification_metrics_by_hand():
    probs = torch.tensor([[0.9, 0.2, 0.7], [0.1, 0.8, 0.4], [0.6, 0.3, 0.2], [0.3, 0.6, 0.9]])
    target = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 0, 0], [0, 0, 1]])
    m = classification_metrics(3, "val/")(probs, target)
    # thresholded at 0.5: rows 0 and 2 exactly right, row 1 misses label 2, row 3 adds label 1
    assert m["val/subset_acc"].item() == pytest.approx(2 / 4)
    assert m["val/label_acc"].item() == pytest.approx(10 / 12)
    logits = torch.logit(probs)
    logloss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target.float()).item()
    by_hand = -sum(math.log(p if t else 1 - p) for pr, tr in zip(probs.tolist(), target.tolist(), strict=True)
                   for p, t in zip(pr, tr, strict=True)) / 12
    assert logloss == pytest.approx(by_hand, rel=1e-5)
    # AP of label 0: scores 0.9 (pos), 0.6 (pos) ranked first -> 1.0
    assert m["val/map"].item() <= 1.0 and m["val/map"].item() > 0.8


def masks():
    # 1 = object, 0 = background, 255 = void. Prediction as booleans.
    target = torch.tensor([[1, 1, 0, 255],
                           [1, 0, 0, 255],
                           [0, 0, 1, 0]], dtype=torch.uint8).view(1, 1, 3, 4)
    pred = torch.tensor([[1, 0, 1, 1],
                         [1, 0, 0, 1],
                         [0, 0, 1, 1]], dtype=torch.bool).view(1, 1, 3, 4)
    return pred, target


def test_pooled_dice_and_iou_by_hand_with_void_excluded():
    pred, target = masks()
    # valid pixels only: TP = 3 (0,0),(1,0),(2,2); FP = 2 (0,2),(2,3); FN = 1 (0,1); void columns ignored
    tp, fp, fn = 3, 2, 1
    m = segmentation_metrics("val/")(pred.long(), target)
    dice, iou = 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)
    assert m["val/dice"].item() == pytest.approx(dice)
    assert m["val/iou"].item() == pytest.approx(iou)
    assert iou == pytest.approx(dice / (2 - dice))
    assert m["val/pixel_acc"].item() == pytest.approx(7 / 10)
    d, i = per_image_dice_iou(pred, target == 1, target != 255)
    assert d.item() == pytest.approx(dice) and i.item() == pytest.approx(iou)


def test_per_image_scores_on_empty_target_and_prediction_are_not_nan():
    empty = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    full = torch.ones(3, 1, 4, 4, dtype=torch.bool)
    valid = torch.ones_like(empty)
    d, i = per_image_dice_iou(empty, empty, valid)
    assert d.tolist() == [1.0] * 3 and i.tolist() == [1.0] * 3
    d, i = per_image_dice_iou(full, empty, valid)
    assert d.tolist() == [0.0] * 3 and i.tolist() == [0.0] * 3
    m = segmentation_metrics("v/")(empty.long(), empty.to(torch.uint8))
    assert not any(torch.isnan(v) for v in m.values())


def test_losses_ignore_void_pixels():
    pred, target = masks()
    logits = torch.where(pred, 3.0, -3.0).float()
    valid = (target != 255).float()
    t = (target == 1).float()
    changed = logits.clone()
    void = target == 255
    changed[void] = -logits[void]  # flip the prediction on void pixels only
    assert masked_bce(logits, t, valid).item() == pytest.approx(masked_bce(changed, t, valid).item())
    assert soft_dice_loss(logits, t, valid).item() == pytest.approx(soft_dice_loss(changed, t, valid).item())
    perfect = torch.where(t.bool(), 20.0, -20.0)
    assert soft_dice_loss(perfect, t, valid).item() < 1e-3


def test_ssim_stays_fp32_inside_a_bf16_autocast_step():
    # Lightning runs validation_step under autocast; SSIM's Gaussian filters are convolutions that autocast
    # would run in bf16, where its variance terms cancel. The task must score exactly as plain fp32 does.
    task = ReconstructionTask(code_size=2048, optimizer=ADAM, channels_last=False)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=gen)
    pred = (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    expected = StructuralSimilarityIndexMeasure(data_range=1.0)(pred, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        task.update_val_metrics(pred, x)
    got = task.val_image_metrics.compute()["val/ssim"]
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
