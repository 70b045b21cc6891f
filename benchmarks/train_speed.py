"""Training throughput of every network against the machine's matmul peak.

    python benchmarks/train_speed.py [--batch 32] [--steps 3] [--repeats 3] [--nets ae8192,segnet]

For each network: forward and training-step GFLOP per image (torch's flop counter), images/s of a
full training step (forward, backward, optimizer) for fp32, channels_last, channels_last with conv
weight gradients in NCHW (CPU; models/fast_conv.py), bf16 autocast and channels_last+bf16, achieved
GFLOP/s and its share of the matching matmul peak; the modes take turns within each repeat. bf16
modes are measured only where the device has native bf16 (emulated bf16 is ~100x slower than fp32
and meaningless as a default; its matmul rate is still reported); medians over repeats with min
and max.
Writes outputs/bench/train_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import save  # benchmarks/ is on sys.path when a script runs
from torch.utils.flop_counter import FlopCounterMode

from voc_dl.hardware import cpu_has_bf16, hardware
from voc_dl.models.autoencoder import AutoEncoder
from voc_dl.models.classifiers import DeepCNN, EncoderClassifier
from voc_dl.models.fast_conv import nchw_weight_grad
from voc_dl.models.segmenter import SegNet, UNet

NETS = {  # name -> (factory, input shape per image, loss kind)
    "ae2048": (lambda: AutoEncoder(2048), (3, 128, 128), "recon"),
    "ae4096": (lambda: AutoEncoder(4096), (3, 128, 128), "recon"),
    "ae8192": (lambda: AutoEncoder(8192), (3, 128, 128), "recon"),
    "frozen_encoder": (lambda: EncoderClassifier(3, freeze_encoder=True), (3, 128, 128), "cls"),
    "encoder": (lambda: EncoderClassifier(3), (3, 128, 128), "cls"),
    "deep_cnn": (lambda: DeepCNN(3), (3, 128, 128), "cls"),
    "segnet": (lambda: SegNet(), (1, 64, 64), "seg"),
    "unet": (lambda: UNet(), (1, 64, 64), "seg"),
}


PEAK_N = {"cpu": 2048, "cuda": 8192}


def device_kind() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, n: int | None = None, reps: int = 10) -> float:
    """Square matmul GFLOP/s; 2048 saturates 2 CPU cores, a Hopper GPU needs 8192."""
    dev = device_kind()
    n = n or PEAK_N[dev]
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(2):
        a @ b
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def loss_of(kind: str, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    out = out.float()
    if kind == "recon":
        return F.mse_loss(out, x)
    if kind == "cls":
        return F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
    return F.binary_cross_entropy_with_logits(out, (x > 0.5).float())


def gflop_per_image(name: str) -> tuple[float, float]:
    """Forward and whole training step (forward + backward), counted by torch for one image.

    Counted, not assumed to be 3x forward: a frozen encoder has no backward pass through it.
    """
    make, shape, kind = NETS[name]
    net, x = make(), torch.rand(1, *shape)
    with FlopCounterMode(display=False) as counter:
        net(x)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        loss_of(kind, net(x), x).backward()
    return forward / 1e9, counter.get_total_flops() / 1e9


def make_step(name: str, batch: int, channels_last: bool, bf16: bool, nchw_wgrad: bool = False):
    make, shape, kind = NETS[name]
    dev = device_kind()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = make().to(dev).to(memory_format=fmt)
    if nchw_wgrad:
        nchw_weight_grad(net)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    x = torch.rand(batch, *shape, device=dev).contiguous(memory_format=fmt)

    def step() -> None:
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        loss = loss_of(kind, out, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()

    return step


def images_per_s(name: str, batch: int, steps: int, channels_last: bool, bf16: bool, nchw_wgrad: bool = False) -> float:
    step, times = make_step(name, batch, channels_last, bf16, nchw_wgrad), []
    for i in range(steps + 1):  # the first step warms up oneDNN/cuDNN and is not counted
        t = time.perf_counter()
        step()
        if i:
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


COMPUTE_OPS = ("convolution", "addmm", "aten::mm", "aten::bmm")  # the ops that do the counted FLOPs


def time_breakdown(name: str, batch: int, channels_last: bool, bf16: bool, nchw_wgrad: bool = False) -> dict:
    """Where a step's time goes: the conv/matmul kernels versus everything else (one profiled step).

    A net's share of the peak is (kernel efficiency) x (kernel share of the time): this separates the two.
    """
    from torch.profiler import ProfilerActivity, profile

    step = make_step(name, batch, channels_last, bf16, nchw_wgrad)
    step()
    cuda = device_kind() == "cuda"
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
        step()
    # on CUDA each aten op carries the device time of the kernels it launched; kernel rows are left out so that
    # nothing counts twice
    ops = {e.key: (e.self_device_time_total if cuda else e.self_cpu_time_total) for e in prof.key_averages()
           if not cuda or e.key.startswith("aten::")}
    total = sum(ops.values())
    compute = sum(t for k, t in ops.items() if any(c in k for c in COMPUTE_OPS))
    others = sorted(((t, k) for k, t in ops.items() if not any(c in k for c in COMPUTE_OPS)), reverse=True)
    return {"compute_time_share": compute / max(total, 1), "compute_s": compute / 1e6,
            "top_other_ops": [(k.removeprefix("aten::"), t / max(total, 1)) for t, k in others[:3]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args()
    native_bf16 = (torch.cuda.is_available() and torch.cuda.is_bf16_supported()) or (
        not torch.cuda.is_available() and cpu_has_bf16())
    peak32 = statistics.median(matmul_peak(torch.float32) for _ in range(3))
    # bf16 is measured either way, to show why it is (not) the default; emulated bf16 is ~100x slower, so a
    # small matrix suffices there
    peak16 = statistics.median(matmul_peak(torch.bfloat16, *((None, 10) if native_bf16 else (512, 1)))
                               for _ in range(3))
    modes = [("fp32", False, False, False), ("channels_last", True, False, False)]
    if device_kind() == "cpu":  # models/fast_conv.py: a CPU (oneDNN) fix
        modes.append(("channels_last+nchw_wgrad", True, False, True))
    if native_bf16:
        modes += [("bf16", False, True, False), ("channels_last+bf16", True, True, False)]
    rows = []
    for name in args.nets.split(","):
        # the modes take turns within each repeat, so that a slow spell of the machine hits them alike
        runs = {mode: [] for mode, *_ in modes}
        for _ in range(args.repeats):
            for mode, cl, bf, nchw in modes:
                runs[mode].append(images_per_s(name, args.batch, args.steps, cl, bf, nchw))
        net_rows = [{"net": name, "mode": mode, "bf16": bf, "images_per_s": statistics.median(runs[mode]),
                     "min": min(runs[mode]), "max": max(runs[mode])} for mode, cl, bf, nchw in modes]
        best = max(range(len(modes)), key=lambda i: net_rows[i]["images_per_s"])
        # explain the fastest mode's share of the peak
        try:
            net_rows[best]["breakdown"] = time_breakdown(name, args.batch, *modes[best][1:])
        except Exception as e:  # the profiler is a diagnosis, not the measurement: keep the rows without it
            print(f"{name}: time breakdown failed: {e!r}", flush=True)
        for r in net_rows:
            print(json.dumps(r), flush=True)
        rows += net_rows
    meta = {**hardware(), "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
            "peak_n": PEAK_N[device_kind()],
            "matmul_peak_fp32_gflops": peak32, "matmul_peak_bf16_gflops": peak16, "native_bf16": native_bf16}
    write_report(meta, rows, Path(args.out))


def write_report(meta: dict, rows: list[dict], out: Path) -> None:
    """Add FLOP counts and shares of the matching peak to measured rows; write JSON and markdown."""
    flops = {name: gflop_per_image(name) for name in dict.fromkeys(r["net"] for r in rows)}
    for r in rows:
        r["fwd_gflop_per_image"], r["step_gflop_per_image"] = flops[r["net"]]
        r["gflop_per_s"] = r["step_gflop_per_image"] * r["images_per_s"]
        peak = meta["matmul_peak_bf16_gflops"] if r.get("bf16") else meta["matmul_peak_fp32_gflops"]
        r["share_of_peak"] = r["gflop_per_s"] / peak
    lines = [f"# Training throughput ({meta['device']}, torch {meta['torch']}, {meta['threads']} threads)", "",
             f"matmul peak ({meta['peak_n']}x{meta['peak_n']}): fp32 {meta['matmul_peak_fp32_gflops']:.0f} "
             "GFLOP/s, bf16 "
             f"{meta['matmul_peak_bf16_gflops']:.1f} GFLOP/s "
             + ("(native)" if meta["native_bf16"] else "(emulated: no native bf16 here, so bf16 modes are not "
                "measured and `precision=auto` keeps fp32)"),
             f"batch {meta['batch']}, median of {meta['repeats']} repeats of {meta['steps']} steps; a step = "
             "forward, backward, Adam; step GFLOP counted by torch's flop counter.", "",
             "| net | mode | fwd GFLOP/img | step GFLOP/img | images/s (min-max) | GFLOP/s | share of peak |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['net']} | {r['mode']} | {r['fwd_gflop_per_image']:.2f} | {r['step_gflop_per_image']:.2f} | "
              f"{r['images_per_s']:.2f} ({r['min']:.2f}-{r['max']:.2f}) | {r['gflop_per_s']:.0f} | "
              f"{100 * r['share_of_peak']:.0f}% |" for r in rows]
    lines += ["", "Where the fastest mode's step time goes (one step under torch.profiler): the conv/matmul "
              "kernels, which do all the counted FLOPs, and the largest other ops (batch-norm, dropout, ReLU, "
              "pooling: memory-bound, no counted FLOPs).", "",
              "| net | mode | conv/matmul share of the time | conv/matmul GFLOP/s | their share of peak "
              "| largest other ops |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        if b := r.get("breakdown"):
            peak = meta["matmul_peak_bf16_gflops"] if r.get("bf16") else meta["matmul_peak_fp32_gflops"]
            kernel = r["step_gflop_per_image"] * meta["batch"] / max(b["compute_s"], 1e-9)
            b["compute_gflop_per_s"], b["compute_share_of_peak"] = kernel, kernel / peak
            other = ", ".join(f"{k} {100 * v:.0f}%" for k, v in b["top_other_ops"])
            lines.append(f"| {r['net']} | {r['mode']} | {100 * b['compute_time_share']:.0f}% | {kernel:.0f} | "
                         f"{100 * kernel / peak:.0f}% | {other} |")
    save(out, "train_speed", meta, rows, lines)


if __name__ == "__main__":
    main()
