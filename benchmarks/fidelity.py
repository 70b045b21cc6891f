"""Do the fast defaults change the results? Each section trained briefly in plain fp32 and in the default.

    python benchmarks/fidelity.py [--dataset shared_voc] [--epochs 2] [--limit-train-batches 8]

Both runs of a section share seed, data and batches; they differ only by `fp32=true` (contiguous
memory format, 32-bit precision) versus the default (channels_last, and bf16-mixed where the
hardware has native bf16). Every final validation metric must agree within 5% (relative) for the
default to stay the default. Writes outputs/bench/fidelity.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import save  # benchmarks/ is on sys.path when a script runs

SECTIONS = {  # experiment -> extra overrides
    "autoencoder": ["model.code_size=2048"],
    "classification": ["model=deep_cnn"],
    "segmentation": ["model.loss=dice"],
}
TOLERANCE = 0.05


def run(experiment: str, extra: list[str], args, out: Path) -> dict[str, dict]:
    sweep = out / "fidelity_runs" / experiment
    cmd = [sys.executable, "-m", "voc_dl.train", "-m", f"experiment={experiment}", f"dataset={args.dataset}",
           *extra, "fp32=true,false", f"trainer.max_epochs={args.epochs}", "trainer.deterministic=true",
           f"++trainer.limit_train_batches={args.limit_train_batches}", f"seed={args.seed}",
           f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir='fp32=${fp32}'"]
    subprocess.run(cmd, check=True)
    found = {}
    for mode in ("True", "False"):
        metrics = json.loads((sweep / f"fp32={mode}" / "metrics.json").read_text())
        if metrics["status"] != "ok":
            raise RuntimeError(f"{experiment} fp32={mode} failed: {metrics.get('error')}")
        found["fp32" if mode == "True" else "default"] = metrics
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="shared_voc")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit-train-batches", type=int, default=8)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args()
    out = Path(args.out)
    rows = []
    for experiment in args.sections.split(","):
        runs = run(experiment, SECTIONS[experiment], args, out)
        ref, fast = runs["fp32"], runs["default"]
        for key, value in ref["val"].items():
            other = fast["val"][key]
            rel = abs(other - value) / max(abs(value), 1e-12)
            rows.append({"section": experiment, "metric": key, "fp32": value, "default": other, "rel_diff": rel,
                         "ok": rel <= TOLERANCE, "default_precision": fast["precision"],
                         "fp32_wall_s": ref["wall_time_s"], "default_wall_s": fast["wall_time_s"]})
    all_ok = all(r["ok"] for r in rows)
    meta = {"dataset": args.dataset, "epochs": args.epochs, "limit_train_batches": args.limit_train_batches,
            "seed": args.seed, "tolerance": TOLERANCE, "all_within_tolerance": all_ok}
    lines = [f"# Fidelity: plain fp32 versus the fast default ({args.dataset}, {args.epochs} epochs of "
             f"{args.limit_train_batches} batches, seed {args.seed})", "",
             f"Every metric within {100 * TOLERANCE:.0f}% relative: **{'yes' if all_ok else 'NO'}**.", "",
             "| section | metric | fp32 | default | default precision | relative difference |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['section']} | {r['metric']} | {r['fp32']:.5f} | {r['default']:.5f} | {r['default_precision']} | "
              f"{100 * r['rel_diff']:.3f}% |" for r in rows]
    save(out, "fidelity", meta, rows, lines)
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
