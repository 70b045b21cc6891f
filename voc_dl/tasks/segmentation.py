"""Section 3: binary segmentation trained with BCE, soft Dice, or both.

Void pixels (255, the VOC object border, when data.void=ignore) count in neither loss nor metric.
Metrics: Dice and IoU over the whole validation set with pixels pooled (torchmetrics' binary F1 and
Jaccard, which equal 2TP/(2TP+FP+FN) and TP/(TP+FP+FN)), the same averaged per image, and pixel
accuracy. `tta=True` predicts at evaluation from the mean of the logits of each image and its mirror
image (training is unchanged).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryF1Score, BinaryJaccardIndex

from voc_dl.data.voc import VOID
from voc_dl.instantiate import instantiate
from voc_dl.tasks.base import VOCTask

LOSSES = ("bce", "dice", "bce_dice")


def masked_bce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, smooth: float = 1.0):
    """1 - soft Dice, pooled over every valid pixel of the batch.

    Pooled rather than per image: per-image Dice is undefined for images with no foreground and
    swings wildly for tiny objects, and the pooled form is what the pooled Dice metric measures.
    """
    prob = torch.sigmoid(logits) * valid
    target = target * valid
    inter = (prob * target).sum()
    return 1 - (2 * inter + smooth) / (prob.sum() + target.sum() + smooth)


def per_image_dice_iou(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor):
    """Hard Dice and IoU of each image; an image with empty target and empty prediction scores 1."""
    dims = tuple(range(1, pred.dim()))
    p, t = pred & valid, target.bool() & valid
    tp = (p & t).sum(dims).float()
    fp = (p & ~t).sum(dims).float()
    fn = (~p & t & valid).sum(dims).float()
    empty = (tp + fp + fn) == 0
    dice = torch.where(empty, torch.ones_like(tp), 2 * tp / (2 * tp + fp + fn).clamp_min(1))
    iou = torch.where(empty, torch.ones_like(tp), tp / (tp + fp + fn).clamp_min(1))
    return dice, iou


def segmentation_metrics(prefix: str) -> MetricCollection:
    return MetricCollection({
        "dice": BinaryF1Score(ignore_index=VOID),
        "iou": BinaryJaccardIndex(ignore_index=VOID),
        "pixel_acc": BinaryAccuracy(ignore_index=VOID),
    }, prefix=prefix)


class SegmentationTask(VOCTask):
    def __init__(self, net: dict, loss: str = "dice", bce_weight: float = 0.5, augment: bool = False,
                 max_zoom: float = 1.0, tta: bool = False, **kwargs):
        if loss not in LOSSES:
            raise ValueError(f"model.loss={loss!r}; allowed: {', '.join(LOSSES)}")
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if max_zoom < 1:
            raise ValueError(f"model.max_zoom={max_zoom}: must be >= 1 (1 = no zoom)")
        self.net, self.loss_name, self.bce_weight, self.augment = instantiate(net), loss, bce_weight, augment
        self.max_zoom, self.tta = max_zoom, tta
        self.train_metrics = segmentation_metrics("train/")
        self.val_metrics = segmentation_metrics("val/")
        self.val_dice_img, self.val_iou_img = MeanMetric(), MeanMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.to_memory_format(x))

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for evaluation: with tta, averaged with those of the mirrored image, mirrored back."""
        logits = self(x).float()
        if self.tta:
            logits = (logits + self(x.flip(-1)).float().flip(-1)) / 2
        return logits

    OUTPUT = ("foreground probability of each pixel, (batch, 1, H, W) in [0, 1]: the sigmoid of the logits "
              "(with flip TTA, of their mean over the image and its mirror image)")

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.predict_logits(x))

    def loss(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        valid = (mask != VOID).float()
        target = (mask == 1).float()
        if self.loss_name == "bce":
            return masked_bce(logits, target, valid)
        if self.loss_name == "dice":
            return soft_dice_loss(logits, target, valid)
        return self.bce_weight * masked_bce(logits, target, valid) + (1 - self.bce_weight) * soft_dice_loss(
            logits, target, valid)

    @staticmethod
    def flip_and_shift(x: torch.Tensor, mask: torch.Tensor, max_shift: int = 6, max_zoom: float = 1.0):
        """The same random flip, zoom and shift for each image and its mask (void fills the gap).

        Zoom (one factor per batch, in [1, max_zoom]) enlarges the batch, image bilinear and mask
        nearest, and crops a random window of the original size: objects appear at new scales.
        """
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        mask = torch.where(flip.view(-1, 1, 1, 1), mask.flip(-1), mask)
        if max_zoom > 1:
            h, w = x.shape[-2:]
            zoom = 1 + float(torch.rand(())) * (max_zoom - 1)
            big = (round(h * zoom), round(w * zoom))
            top, left = (int(torch.randint(0, b - s + 1, ())) for b, s in zip(big, (h, w), strict=True))
            x = F.interpolate(x, size=big, mode="bilinear", align_corners=False)[..., top:top + h, left:left + w]
            mask = F.interpolate(mask.float(), size=big, mode="nearest-exact")[..., top:top + h, left:left + w]
            mask = mask.to(torch.uint8)
        dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,)))
        x = torch.roll(x, (dy, dx), dims=(-2, -1))
        mask = torch.roll(mask, (dy, dx), dims=(-2, -1))
        # pixels that wrapped around are not real: void, so they count in neither loss nor metric
        wrapped = torch.zeros_like(mask, dtype=torch.bool)
        if dy:
            (wrapped[..., :dy, :] if dy > 0 else wrapped[..., dy:, :]).fill_(True)
        if dx:
            (wrapped[..., :, :dx] if dx > 0 else wrapped[..., :, dx:]).fill_(True)
        mask = mask.masked_fill(wrapped, VOID)
        return x, mask

    def training_step(self, batch, batch_idx: int):
        x, mask = batch
        if self.augment:
            x, mask = self.flip_and_shift(x, mask, max_zoom=self.max_zoom)
        logits = self(x).float()
        loss = self.loss(logits, mask)
        self.train_metrics.update(logits.detach() > 0, mask)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int):
        x, mask = batch
        logits = self.predict_logits(x)
        loss = self.loss(logits, mask)
        pred = logits > 0
        self.val_metrics.update(pred, mask)
        dice, iou = per_image_dice_iou(pred, mask == 1, mask != VOID)
        self.val_dice_img.update(dice)
        self.val_iou_img.update(iou)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True)
        self.log_dict(self.val_metrics, on_epoch=True, prog_bar=True)
        self.log("val/dice_per_image", self.val_dice_img, on_epoch=True)
        self.log("val/iou_per_image", self.val_iou_img, on_epoch=True)
        self.keep_val_sample(batch_idx, x, (mask == 1).float(), torch.sigmoid(logits))

    def on_validation_epoch_end(self) -> None:
        if self.should_log_images():
            x, target, prob = self._val_sample
            self.log_grid("val/masks", [x, target, (prob > 0.5).float()])
