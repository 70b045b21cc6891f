"""What the three LightningModules share: config-built optimiser, self-describing checkpoints, memory format,
the test split scored as validation is, image grids."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torchmetrics import Metric, MetricCollection
from torchvision.utils import make_grid

from voc_dl.instantiate import instantiate
from voc_dl.models.fast_conv import helps_on_this_cpu, nchw_weight_grad

TASK_KEY = "voc_dl_task"  # the checkpoint entry naming the LightningModule class


class VOCTask(pl.LightningModule):
    """Every constructor argument is plain config (the network and optimiser as `_target_` dicts) and is
    saved as a hyperparameter, so `<Task>.load_from_checkpoint(path)` rebuilds the model from the file."""

    def __init__(
        self,
        optimizer: dict,
        scheduler: dict | None = None,
        channels_last: bool = True,
        image_log_every_n_epochs: int = 5,
        nchw_weight_grad: bool = False,
        monitor: dict | None = None,
    ):
        super().__init__()
        # the run's `monitor` (conf/train.yaml): it steps a plateau scheduler and stops early; a task built
        # without a run config (from Python, or from a checkpoint that predates the key) watches val/loss
        self.monitor = dict(monitor or {"metric": "val/loss", "mode": "min"})
        self.optimizer_config, self.scheduler_config = optimizer, scheduler
        self.channels_last = channels_last
        self.image_log_every_n_epochs = image_log_every_n_epochs
        self.nchw_weight_grad = nchw_weight_grad
        self._val_sample: tuple | None = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # which class to rebuild: voc_dl.checkpoints loads a checkpoint of any task without being told
        checkpoint[TASK_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"

    # -- memory format --------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # Conv nets run fastest with NHWC on both oneDNN (CPU) and cuDNN; the loader already yields NHWC.
        self.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        if self.nchw_weight_grad and self.channels_last and self.device.type == "cpu" and helps_on_this_cpu():
            nchw_weight_grad(self.net)  # see models/fast_conv.py: oneDNN's AVX2 channels-last weight gradient is slow

    def to_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    # -- metrics --------------------------------------------------------------------------------------
    def reset_metrics(self, prefix: str) -> None:
        for name, module in self.named_children():
            if name.startswith(prefix) and isinstance(module, Metric | MetricCollection):
                module.reset()

    def on_train_epoch_start(self) -> None:
        self.reset_metrics("train_")

    def on_validation_epoch_start(self) -> None:
        # Explicit, because under ddp_spawn a final trainer.validate() otherwise starts from the states
        # of an earlier epoch's validation and reports their mixture.
        self.reset_metrics("val_")

    # -- the test split: scored by the validation code, logged as test/* --------------------------------
    def test_step(self, batch, batch_idx: int):
        return self.validation_step(batch, batch_idx)

    def on_test_epoch_start(self) -> None:
        self.reset_metrics("val_")

    def log(self, name: str, value, *args, **kwargs) -> None:
        # The one place that renames: every task's validation_step logs val/*, and under trainer.test the same
        # step, metrics and reductions report test/*, so test and val numbers cannot drift apart.
        if self._trainer is not None and self._trainer.testing and name.startswith("val/"):
            name = "test/" + name.removeprefix("val/")
        super().log(name, value, *args, **kwargs)

    def full_precision(self):
        """A context for metric updates inside a bf16/fp16 autocast step: SSIM filters with convolutions,
        and in bf16 its variance terms (E[x^2] - E[x]^2) cancel to noise."""
        return torch.autocast(self.device.type, enabled=False)

    # -- optimisation -----------------------------------------------------------------------------------
    def param_groups(self) -> list[dict] | list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        params = self.param_groups()
        if not params:
            raise ValueError("the model has no trainable parameters: check model.net freeze settings")
        optimizer = instantiate({**self.optimizer_config, "_partial_": True})(params)
        if not self.scheduler_config:
            return optimizer
        scheduler = instantiate({**self.scheduler_config, "_partial_": True})(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch",
                                                         "monitor": self.monitor["metric"], "name": "train/lr"}}

    # -- prediction (voc_dl.predict, voc_dl.export) ------------------------------------------------------
    # What `infer` returns, in words: voc_dl.predict records it and exported files carry it.
    OUTPUT = ""

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """The network's answer for float images in [0, 1]: what predictions and exported models give."""
        raise NotImplementedError

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        return {"output": self.infer(batch["image"])}

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # -- TensorBoard images ---------------------------------------------------------------------------
    def keep_val_sample(self, batch_idx: int, *tensors: torch.Tensor, n: int = 8) -> None:
        if batch_idx == 0:
            self._val_sample = tuple(t[:n].detach().float().cpu() for t in tensors)

    def should_log_images(self) -> bool:
        every = self.image_log_every_n_epochs
        last = self.trainer.max_epochs is not None and self.current_epoch == self.trainer.max_epochs - 1
        return (bool(every) and not self.trainer.sanity_checking and self._val_sample is not None
                and (self.current_epoch % every == 0 or last))

    def log_grid(self, tag: str, rows: list[torch.Tensor]) -> None:
        """One grid, a row per tensor (N, C, H, W) in [0, 1], to every TensorBoard logger."""
        n = rows[0].shape[0]
        rows = [r.expand(-1, 3, -1, -1) if r.shape[1] == 1 else r for r in rows]
        grid = make_grid(torch.cat(rows).clamp(0, 1), nrow=n, padding=2)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(tag, grid, self.current_epoch)
