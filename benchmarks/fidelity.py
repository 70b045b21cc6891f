"""Do the fast defaults change the results? Each section trained briefly in plain fp32 and in the default.

    python benchmarks/fidelity.py [--dataset shared_voc] [--epochs 3] [--limit-train-batches 12]
        [--limit-val-batches 4]

Both runs of a section share seed, data and batches; they differ only by `fp32=true` (contiguous
memory format, 32-bit precision) versus the default (channels_last, and bf16-mixed where the
hardware has native bf16). Every final validation metric must agree within 5% (relative) for the
default to stay the default.

A third run, plain fp32 with the next seed, measures how far the metrics move for reasons that
have nothing to do with speed settings: two float orders of summation are as different as two
seeds once training amplifies them, so a difference near the seed spread says "noise", one far
above it says "the setting changes results". Writes outputs/bench/fidelity.{md,json}.
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
    "autoencoder_improved": ["model.code_size=2048"],
    "classification": ["model=deep_cnn"],
    "segmentation": ["model.loss=dice"],
}
TOLERANCE = 0.05


def run(experiment: str, extra: list[str], args, out: Path) -> dict[str, dict]:
    sweep = out / "fidelity_runs" / experiment
    cmd = [sys.executable, "-m", "voc_dl.train", "-m", f"experiment={experiment}", f"dataset={args.dataset}",
           *extra, f"trainer.max_epochs={args.epochs}", "trainer.deterministic=true",
           f"++trainer.limit_train_batches={args.limit_train_batches}",
           f"++trainer.limit_val_batches={args.limit_val_batches}", "~logger",
           f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir='fp32=${fp32},seed=${seed}'"]
    found = {}
    for name, fp32, seed in (("fp32", True, args.seed), ("default", False, args.seed), ("seed", True, args.seed + 1)):
        folder = sweep / f"fp32={fp32},seed={seed}"
        if not (folder / "metrics.json").exists() or args.rerun:
            subprocess.run([*cmd, f"fp32={str(fp32).lower()}", f"seed={seed}"], check=True)
        metrics = json.loads((folder / "metrics.json").read_text())
        if metrics["status"] != "ok":
            raise RuntimeError(f"{experiment} {folder.name} failed: {metrics.get('error')}")
        found[name] = metrics
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="shared_voc")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--limit-train-batches", type=int, default=12)
    ap.add_argument("--limit-val-batches", type=int, default=4, help="the same validation batches in every run")
    ap.add_argument("--rerun", action="store_true", help="train again even where a finished run exists")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args()
    out = Path(args.out)
    rows = []
    for experiment in args.sections.split(","):
        runs = run(experiment, SECTIONS[experiment], args, out)
        ref, fast, seed = runs["fp32"], runs["default"], runs["seed"]
        for key, value in ref["val"].items():
            other = fast["val"][key]
            rel = abs(other - value) / max(abs(value), 1e-12)
            spread = abs(seed["val"][key] - value) / max(abs(value), 1e-12)
            rows.append({"section": experiment, "metric": key, "fp32": value, "default": other, "rel_diff": rel,
                         "fp32_next_seed": seed["val"][key], "seed_spread": spread,
                         "ok": rel <= TOLERANCE, "default_precision": fast["precision"],
                         "fp32_wall_s": ref["wall_time_s"], "default_wall_s": fast["wall_time_s"]})
    all_ok = all(r["ok"] for r in rows)
    meta = {"dataset": args.dataset, "epochs": args.epochs, "limit_train_batches": args.limit_train_batches,
            "limit_val_batches": args.limit_val_batches,
            "seed": args.seed, "tolerance": TOLERANCE, "all_within_tolerance": all_ok}
    lines = [f"# Fidelity: plain fp32 versus the fast default ({args.dataset}, {args.epochs} epochs of "
             f"{args.limit_train_batches} batches, {args.limit_val_batches} validation batches, seed {args.seed})", "",
             f"Every metric within {100 * TOLERANCE:.0f}% relative: **{'yes' if all_ok else 'NO'}**. "
             f"The last two columns are plain fp32 with seed {args.seed + 1}: the noise floor.", "",
             "| section | metric | fp32 | default | default precision | relative difference | fp32, next seed "
             "| seed spread |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['section']} | {r['metric']} | {r['fp32']:.5f} | {r['default']:.5f} | {r['default_precision']} | "
              f"{100 * r['rel_diff']:.3f}% | {r['fp32_next_seed']:.5f} | {100 * r['seed_spread']:.2f}% |"
              for r in rows]
    save(out, "fidelity", meta, rows, lines)
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
