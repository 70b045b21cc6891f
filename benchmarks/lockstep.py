"""Is the fast default the same computation as plain fp32? Three copies trained in lockstep.

    python benchmarks/lockstep.py [--dataset shared_voc] [--steps 20] [--sections autoencoder,classification]

End-of-run metrics of short trainings judge a speed setting poorly: the study's autoencoder leaves its
"mean image" plateau at a step that any rounding change moves, so two runs that differ in the last bit
can end 30% apart. Here three copies of each section's task start from the same weights and take the
study's optimiser steps on the same real batches: plain fp32 (contiguous), the default (channels-last, and
bf16 where native), and plain fp32 with every weight moved by one ulp (the smallest change a float allows).
If the default's loss stays as close to fp32's as the one-ulp copy's does, step by step, the default is
the same computation with its rounding in another order; if it drifts away faster, it changes results.
Dropout is off in all three copies: its masks follow the memory layout, so channels-last draws other masks
(another random stream, not other arithmetic). Writes outputs/bench/lockstep.{md,json}.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from pathlib import Path

import torch
from common import compose_train, save  # benchmarks/ is on sys.path when a script runs
from fidelity import SECTIONS  # the same net per section as the end-of-run comparison

from voc_dl.hardware import hardware
from voc_dl.train import build


def one_ulp(task: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in task.parameters():
            direction = torch.where(torch.rand(p.shape, generator=gen) < 0.5, -torch.inf, torch.inf)
            p.copy_(torch.nextafter(p, direction.to(p.dtype)))


def lockstep(experiment: str, extra: list[str], args) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_train(experiment, tmp, [f"dataset={args.dataset}", *extra, f"seed={args.seed}", "~logger",
                                              f"paths.run_dir={tmp}"])
        datamodule, task, _ = build(cfg)
    datamodule.setup("fit")
    torch.manual_seed(args.seed)
    batches = []
    for i, batch in enumerate(datamodule.train_dataloader()):
        if i == args.steps:
            break
        batches.append(datamodule.on_after_batch_transfer(batch, 0))
    for m in task.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    copies = {"fp32": copy.deepcopy(task), "default": copy.deepcopy(task), "fp32 + 1 ulp": copy.deepcopy(task)}
    copies["fp32"].channels_last = copies["fp32 + 1 ulp"].channels_last = False
    one_ulp(copies["fp32 + 1 ulp"], args.seed)
    losses = {}
    for name, t in copies.items():
        t.train()
        t.to(memory_format=torch.channels_last if t.channels_last else torch.contiguous_format)
        opt = t.configure_optimizers()
        opt = opt["optimizer"] if isinstance(opt, dict) else opt
        losses[name] = []
        for i, batch in enumerate(batches):
            torch.manual_seed(args.seed + i)  # the same augmentation draws, if the config has any
            loss = t.training_step(batch, i)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
        print(experiment, name, [f"{v:.5f}" for v in losses[name]], flush=True)
    rows = []
    for i in range(len(batches)):
        ref = losses["fp32"][i]
        rows.append({"section": experiment, "step": i + 1, "fp32": ref, "default": losses["default"][i],
                     "ulp": losses["fp32 + 1 ulp"][i],
                     "default_vs_fp32": abs(losses["default"][i] - ref) / abs(ref),
                     "ulp_vs_fp32": abs(losses["fp32 + 1 ulp"][i] - ref) / abs(ref)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="shared_voc")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args()
    rows = []
    for experiment in args.sections.split(","):
        rows += lockstep(experiment, SECTIONS[experiment], args)
    meta = {**hardware(), "dataset": args.dataset, "steps": args.steps, "seed": args.seed}
    lines = [f"# Lockstep: fp32, the default, and fp32 moved by one ulp ({args.dataset}, {args.steps} steps, "
             f"seed {args.seed}, dropout off)", "",
             "Relative difference of each step's training loss from plain fp32's. The default changes results "
             "only if its column grows clearly faster than the one-ulp column.", "",
             "| section | steps | default vs fp32: median (max) | one ulp vs fp32: median (max) | "
             "last step: default / one ulp |", "|---|---|---|---|---|"]
    for section in dict.fromkeys(r["section"] for r in rows):
        rs = [r for r in rows if r["section"] == section]
        d, u = [r["default_vs_fp32"] for r in rs], [r["ulp_vs_fp32"] for r in rs]
        lines.append(f"| {section} | {len(rs)} | {statistics.median(d):.2e} ({max(d):.2e}) | "
                     f"{statistics.median(u):.2e} ({max(u):.2e}) | {d[-1]:.2e} / {u[-1]:.2e} |")
    save(Path(args.out), "lockstep", meta, rows, lines)


if __name__ == "__main__":
    main()
