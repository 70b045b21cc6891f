"""What the run executes on: CPU features, the precision they make fastest, and a record for metrics.json."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch


@functools.cache  # fixed for the process; precision and conv-route choices both ask
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not there)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split())


def cpu_has_bf16() -> bool:
    """Native bf16 on this CPU (AVX512-BF16 or AMX): then bf16 autocast is faster, not emulated."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_precision(requested: str | int, fp32: bool, accelerator: str) -> str:
    if fp32:
        return "32-true"
    if str(requested) != "auto":
        return str(requested)
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        # emulated bf16 (pre-Ampere) is slower than fp16 with loss scaling, which those GPUs run on tensor cores
        return "bf16-mixed" if torch.cuda.is_bf16_supported(including_emulation=False) else "16-mixed"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


def cpu_name() -> str:
    name = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


def hardware() -> dict:
    """`device`: the GPU that runs, else the CPU; `cpu`: the host's CPU model either way."""
    cpu = f"{cpu_name()} ({os.cpu_count()} cores)"
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "cpu": cpu}
    info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU: {cpu}"
    return info
