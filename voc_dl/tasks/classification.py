"""Section 2: multi-label classification with sigmoid outputs and binary cross-entropy.

The study's "accuracy" is undefined; this task logs all the candidates: exact-match (subset)
accuracy, per-label accuracy (the mean over every image x class decision), macro mAP, macro F1,
and the log-loss (mean binary cross-entropy over images and classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import EarlyStopping
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MultilabelAccuracy,
    MultilabelAveragePrecision,
    MultilabelExactMatch,
    MultilabelF1Score,
)
from torchvision.transforms import v2

from voc_dl.instantiate import instantiate
from voc_dl.tasks.base import VOCTask
from voc_dl.tasks.reconstruction import load_encoder_state


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection({
        "subset_acc": MultilabelExactMatch(num_labels=num_classes),
        "label_acc": MultilabelAccuracy(num_labels=num_classes, average="micro"),
        "map": MultilabelAveragePrecision(num_labels=num_classes, average="macro"),
        "f1": MultilabelF1Score(num_labels=num_classes, average="macro"),
    }, prefix=prefix)


def augmentation(size: int, strength: float = 1.0) -> nn.Module:
    """Random flip, resized crop and colour jitter; `strength` scales the crop's ranges and the jitter
    (1: the values below, 0: flips only)."""
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomResizedCrop(size, scale=(1 - 0.4 * strength, 1.0), ratio=((3 / 4) ** strength, (4 / 3) ** strength),
                             antialias=True),
        v2.ColorJitter(brightness=0.3 * strength, contrast=0.3 * strength, saturation=0.3 * strength,
                       hue=0.05 * strength),
    ])


class ClassificationTask(VOCTask):
    def __init__(self, net: dict, num_classes: int, encoder_ckpt: str | None = None,
                 augment: bool = False, augment_strength: float = 1.0, l2: float = 0.0,
                 l2_blocks: tuple[int, ...] = (),
                 early_stopping_patience: int | None = None, early_stopping_min_delta: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.net, self.num_classes = instantiate(net), num_classes
        if encoder_ckpt and not hasattr(self.net, "load_encoder"):
            raise ValueError(f"model.encoder_ckpt is set but model.net ({type(self.net).__name__}) has no "
                             "autoencoder encoder. Fix: use model=frozen_encoder or unset encoder_ckpt")
        self.encoder_ckpt = encoder_ckpt
        self.augment = augment
        self._augmentation: nn.Module | None = None
        if not 0 <= augment_strength <= 2:  # 2: the crop keeps a fifth of the image
            raise ValueError(f"model.augment_strength={augment_strength}: must be in [0, 2] (1 = the default, "
                             "0 = flips only)")
        self.augment_strength = augment_strength
        if augment and getattr(self.net, "feature_cache", None) is not None:
            self.net.feature_cache = None  # augmented images are new every epoch: nothing to reuse
        self.l2, self.l2_blocks = l2, tuple(l2_blocks)
        self.early_stopping_patience, self.early_stopping_min_delta = early_stopping_patience, early_stopping_min_delta
        self.train_metrics = classification_metrics(num_classes, "train/")
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.train_logloss, self.val_logloss = MeanMetric(), MeanMetric()

    def setup(self, stage: str) -> None:
        # Only a new training starts from the Section 1 encoder; a resumed run or a loaded checkpoint holds
        # every weight already, and the encoder's file need not exist any more.
        if stage == "fit" and self.encoder_ckpt:
            state, code_size = load_encoder_state(self.encoder_ckpt)
            self.net.load_encoder(state, str(self.encoder_ckpt), code_size)

    def configure_callbacks(self):
        if not self.early_stopping_patience:
            return []
        return [EarlyStopping(monitor=self.monitor["metric"], mode=self.monitor["mode"],
                              patience=self.early_stopping_patience,
                              min_delta=self.early_stopping_min_delta)]

    def param_groups(self):
        """L2 (coupled weight decay, as Keras' kernel_regularizer) only on the chosen conv kernels."""
        if not self.l2 or not self.l2_blocks:
            return super().param_groups()
        decayed = self.net.conv_weights(self.l2_blocks)
        ids = {id(p) for p in decayed}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        # Keras adds l2 * sum(w^2) to the loss: its gradient is 2 * l2 * w, i.e. weight_decay = 2 * l2.
        return [{"params": decayed, "weight_decay": 2 * self.l2}, {"params": rest}]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.to_memory_format(x))

    OUTPUT = "probability of each class, (batch, classes) in [0, 1]: independent sigmoids (multi-label)"

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(x).float())

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        if self._augmentation is None:
            self._augmentation = augmentation(x.shape[-1], self.augment_strength)
        # v2 transforms draw one set of parameters per call: call per image so each gets its own.
        return torch.stack([self._augmentation(img) for img in x])

    def _step(self, x, y):
        logits = self(x).float()
        loss = F.binary_cross_entropy_with_logits(logits, y)
        return logits, loss

    def training_step(self, batch, batch_idx: int):
        x, y = batch
        if self.augment:
            x = self._augment(x)
        logits, loss = self._step(x, y)
        self.train_metrics.update(torch.sigmoid(logits.detach()), y.int())
        self.train_logloss.update(loss.detach(), weight=x.shape[0])
        self.log("train/loss", self.train_logloss, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int):
        x, y = batch
        logits, loss = self._step(x, y)
        self.val_metrics.update(torch.sigmoid(logits), y.int())
        self.val_logloss.update(loss, weight=x.shape[0])
        self.log("val/loss", self.val_logloss, on_epoch=True, prog_bar=True)
        self.log_dict(self.val_metrics, on_epoch=True)
