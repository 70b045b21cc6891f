"""Section 1: training the autoencoder to reconstruct its input (MSE or MAE)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from voc_dl.models.autoencoder import AutoEncoder
from voc_dl.tasks.base import VOCTask

LOSSES = {"mse": F.mse_loss, "mae": F.l1_loss}


class ReconstructionTask(VOCTask):
    def __init__(self, code_size: int = 8192, loss: str = "mse", norm: bool = False, **kwargs):
        if loss not in LOSSES:
            raise ValueError(f"model.loss={loss!r}; allowed: {', '.join(LOSSES)}")
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.net = AutoEncoder(code_size, norm=norm)
        self.loss_name, self.loss_fn = loss, LOSSES[loss]
        self.train_metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()},
                                              prefix="train/")
        self.val_flat_metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()},
                                                 prefix="val/")
        # PSNR over the pooled set (10 log10(1/MSE)), SSIM averaged per image: the perceptual view
        self.val_image_metrics = MetricCollection(
            {"psnr": PeakSignalNoiseRatio(data_range=1.0), "ssim": StructuralSimilarityIndexMeasure(data_range=1.0)},
            prefix="val/")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.to_memory_format(x))

    OUTPUT = "the reconstructed image, (batch, 3, H, W) in [0, 1] (the decoder ends in a sigmoid)"

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).float()

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """The reconstruction and each image's MSE and MAE against its input, as the metrics define them."""
        x = batch["image"]
        pred = self.infer(x)
        err = pred - x.float()
        return {"output": pred, "mse": err.square().mean((1, 2, 3)), "mae": err.abs().mean((1, 2, 3))}

    def _step(self, x: torch.Tensor):
        x = self.to_memory_format(x)
        pred = self(x).float()  # loss and metrics in fp32 whatever the autocast dtype
        return x, pred, self.loss_fn(pred, x)

    def flat(self, t: torch.Tensor) -> torch.Tensor:
        # A 1-D view in memory order (torchmetrics' MSE/MAE call .view(-1), which NHWC strides refuse).
        return t.permute(0, 2, 3, 1).reshape(-1) if self.channels_last else t.reshape(-1)

    def training_step(self, x: torch.Tensor, batch_idx: int):
        x, pred, loss = self._step(x)
        self.train_metrics.update(self.flat(pred.detach()), self.flat(x))
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, x: torch.Tensor, batch_idx: int):
        x, pred, loss = self._step(x)
        self.update_val_metrics(pred, x)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_dict(self.val_flat_metrics, on_epoch=True)
        self.log_dict(self.val_image_metrics, on_epoch=True)
        self.keep_val_sample(batch_idx, x, pred)

    def update_val_metrics(self, pred: torch.Tensor, x: torch.Tensor) -> None:
        self.val_flat_metrics.update(self.flat(pred), self.flat(x))
        with self.full_precision():
            self.val_image_metrics.update(pred, x)

    def on_validation_epoch_end(self) -> None:
        if self.should_log_images():
            x, pred = self._val_sample
            self.log_grid("val/reconstructions", [x, pred])


def encoder_file(ckpt_path: str | Path) -> Path:
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model.encoder_ckpt={ckpt_path}: no such file. Fix: train Section 1 first "
                                "(make autoencoder) or point model.encoder_ckpt at its checkpoints/best.ckpt")
    return path


def load_encoder_state(ckpt_path: str | Path) -> tuple[dict[str, torch.Tensor], int]:
    """The encoder weights and code size of a Section 1 checkpoint, with errors that say what to fix."""
    path = encoder_file(ckpt_path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt)
    prefix = "net.encoder."
    enc = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not enc:
        raise ValueError(f"model.encoder_ckpt={ckpt_path} holds no autoencoder encoder (no '{prefix}*' keys). "
                         "Fix: use a checkpoint of experiment=autoencoder")
    code_size = ckpt.get("hyper_parameters", {}).get("code_size")
    return enc, code_size
