"""Export a checkpoint's network to run without voc-dl:

    python -m voc_dl.export ckpt_path=<run>/checkpoints/best.ckpt format=onnx|torchscript [out=<file>] [tta=true]

The file computes what `voc_dl.predict` computes (the task's `infer`): float images in [0, 1] in, probabilities
(or the reconstruction) out, with a dynamic batch dimension. Its metadata say how to prepare an image and read
the output (ONNX: the model's metadata_props; TorchScript: the extra file voc_dl.json). After writing, the file
is run (onnxruntime, or torch.jit.load) on a batch of another size and compared with PyTorch; the run folder's
metrics.json records that check.

ONNX goes through torch's default exporter (`torch.onnx.export(dynamo=True)`, which needs onnxscript): the
TorchScript-based one is deprecated in torch 2.14 and announced for removal. onnx, onnxruntime and onnxscript
are the optional extra `pip install -e '.[export]'`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import logging
import warnings
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

import voc_dl
from voc_dl import cli
from voc_dl.atomic import atomic_write_bytes
from voc_dl.checkpoints import checkpoint_file, for_inference, load_task, sha256
from voc_dl.config import ConfigError
from voc_dl.data.image_files import preprocessing
from voc_dl.data.voc import CHANNELS
from voc_dl.hardware import hardware
from voc_dl.run_record import recorded

log = logging.getLogger("voc_dl")
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT = "image"
OUTPUTS = {"segmentation": "foreground_probability", "classification": "class_probabilities",
           "reconstruction": "reconstruction"}
EXTRA_FILE = "voc_dl.json"  # TorchScript's metadata, in the archive beside the code
EXPORT_EXTRA = "pip install -e '.[export]' (onnx, onnxruntime, onnxscript)"
# The check after writing: outputs lie in [0, 1] and the file and PyTorch differ only by fp32 summation order,
# about 1e-6 here; a wrongly translated op is off by 1e-2 or more. 1e-4 tells the two apart with room to spare.
CHECK_ATOL = 1e-4


class Inference(nn.Module):
    """A task's `infer` (float images in [0, 1] -> its output) as the one module that is exported."""

    def __init__(self, task):
        super().__init__()
        self.task = task

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.task.infer(image)


def inference_module(task) -> Inference:
    task.channels_last = False  # a plain graph: memory format is the runtime's business
    return Inference(task).eval()


def metadata(task, trained_on: dict, threshold: float, ckpt: Path, sha256: str) -> dict[str, str]:
    """What a user of the file needs to prepare an image and read the answer; every value a string."""
    kind = trained_on["task"]
    size, color = int(trained_on["image_size"]), trained_on.get("color", "rgb")
    prep = preprocessing(size, color)
    meta = {
        "producer": f"voc-dl {voc_dl.__version__}",
        "task": kind,
        "input": f"{INPUT}: {prep['layout']}, dynamic batch",
        "image_size": str(size),
        "color": prep["color"],
        "decode": prep["decode"],
        "resize": prep["resize"],
        "scaling": prep["scaling"],
        "output": f"{OUTPUTS[kind]}: {task.OUTPUT}",
        "output_name": OUTPUTS[kind],
        "output_kind": "reconstruction" if kind == "reconstruction" else "probabilities",
        "tta": str(bool(getattr(task, "tta", False))).lower(),
        "checkpoint": str(ckpt),
        "checkpoint_sha256": sha256,
    }
    if kind != "reconstruction":
        meta["classes"] = json.dumps(list(trained_on["classes"]) if kind == "classification" else ["object"])
        meta["threshold"] = str(threshold)
        meta["decision"] = ("a class is present where its probability is above threshold" if kind == "classification"
                            else "a pixel is object where its probability is above threshold")
    return meta


@contextlib.contextmanager
def quiet():
    """torch.jit announces its deprecation on every call, tracing warns of Python values it records, and the
    ONNX exporter's optimiser logs each of its passes."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def export_onnx(module: Inference, example: torch.Tensor, meta: dict[str, str], out: Path, output: str) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch's dynamo exporter translates through it)
    except ImportError as e:
        raise ConfigError(f"format=onnx needs {e.name}, from the optional extra. Fix: {EXPORT_EXTRA}") from None
    with quiet():
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=[INPUT], output_names=[output],
                                    dynamic_shapes={INPUT: {0: torch.export.Dim("batch", min=1)}},
                                    verbose=False, optimize=True)
    proto = program.model_proto
    proto.doc_string = f"voc-dl {meta['task']} model: {meta['output']}"
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    atomic_write_bytes(out, proto.SerializeToString())


def export_torchscript(module: Inference, example: torch.Tensor, meta: dict[str, str], out: Path) -> None:
    # Lightning's own to_torchscript sets this flag: a LightningModule's `trainer` is then None, not an error
    module.task._jit_is_scripting = True
    try:
        with quiet():
            # traced, not scripted: the nets are plain tensor code, and tracing records the TTA flips too
            traced = torch.jit.trace(module, example, check_trace=False)
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer, _extra_files={EXTRA_FILE: json.dumps(meta, indent=2)})
    finally:
        module.task._jit_is_scripting = False
    atomic_write_bytes(out, buffer.getvalue())


def run_file(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    """The exported file's output for a float32 NCHW batch, run by its own runtime."""
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError(f"checking the ONNX file needs onnxruntime, from the optional extra. Fix: "
                              f"{EXPORT_EXTRA}") from None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {INPUT: x})[0]
    with quiet():
        model = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def runtime(fmt: str) -> str:
    return f"onnxruntime {importlib.metadata.version('onnxruntime')}" if fmt == "onnx" else f"torch {torch.__version__}"


def export(cfg: DictConfig) -> dict:
    """Write the file, check it, and record the run in the run folder's metrics.json (also when it fails)."""
    result = recorded(cfg, lambda result: _export(cfg))
    log.info("exported %s to %s (%s, %.1f MB); checked in %s on 3 images: max |difference| to PyTorch %.2g",
             result["ckpt_path"], result["out"], cfg.format, result["bytes"] / 1e6, result["check"]["runtime"],
             result["check"]["max_abs_diff"])
    return result


def _export(cfg: DictConfig) -> dict:
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError("ckpt_path is required. Fix: python -m voc_dl.export ckpt_path=<run>/checkpoints/best.ckpt "
                          "format=onnx|torchscript")
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format!r}; allowed: {', '.join(FORMATS)}")
    ckpt = checkpoint_file(cfg.ckpt_path)
    task, trained_on = load_task(ckpt)
    kind = trained_on.get("task")
    for_inference(task, kind, cfg.tta, cfg.ckpt_path)
    out = Path(cfg.out).expanduser() if cfg.out else Path(cfg.paths.run_dir) / f"{kind}{FORMATS[cfg.format]}"
    if out.is_dir():
        raise ConfigError(f"out={cfg.out} is a folder. Fix: out=<a file>, e.g. outputs/export/model"
                          f"{FORMATS[cfg.format]}")
    module = inference_module(task)
    channels, size = CHANNELS[trained_on.get("color", "rgb")], int(trained_on["image_size"])
    # batch 2 to trace: torch.export would take a batch of 1 for a constant
    example = torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(0))
    meta = metadata(task, trained_on, cfg.threshold, ckpt.resolve(), sha256(ckpt))
    if cfg.format == "onnx":
        export_onnx(module, example, meta, out, OUTPUTS[kind])
    else:
        export_torchscript(module, example, meta, out)
    # the check: a batch of another size (the batch dimension is dynamic) through the file's own runtime
    x = torch.rand(3, channels, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = module(x).numpy()
    got = run_file(out, cfg.format, x.numpy())
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    check = {"images": 3, "shape": list(got.shape), "max_abs_diff": diff, "atol": CHECK_ATOL,
             "runtime": runtime(cfg.format)}
    if not diff <= CHECK_ATOL:
        raise ValueError(f"{out}: the exported model disagrees with PyTorch (max |difference| {diff:.3g}, output "
                         f"shape {list(got.shape)} for {list(expected.shape)}). Fix: try format=torchscript, and "
                         "report the checkpoint's network")
    return {"ckpt_path": str(ckpt.resolve()), "task": kind, "format": cfg.format, "out": str(out.absolute()),
            "bytes": out.stat().st_size, "metadata": meta, "check": check, "hardware": hardware()}


@hydra.main(version_base="1.3", config_path="../conf", config_name="export.yaml")
def app(cfg: DictConfig) -> None:
    with cli.one_line_errors():
        export(cfg)


def main() -> None:
    cli.run(app)


if __name__ == "__main__":
    main()
