"""Do the fast defaults change the results? Each section trained in plain fp32 and in the default.

    python benchmarks/fidelity.py [--dataset shared_voc] [--sections autoencoder,classification]
        [--seeds 1] [--epochs E] [--limit-train-batches B] [--limit-val-batches V] [overrides ...]

Both runs of a seed share data and batches; they differ only by `fp32=true` (contiguous memory format,
32-bit precision) versus the default (channels_last, and bf16-mixed where the hardware has native bf16:
CUDA, or a CPU with AVX512-BF16/AMX). Every final validation metric, averaged over the seeds, must agree
within 5% (relative) for the default to stay the default.

Each section trains as long as LENGTH says unless --epochs/--limit-*-batches are given: past the
study's autoencoder's "mean image" plateau (which rounding decides when to leave), and long enough for
the deep CNN to leave the 0.5 threshold its multi-label metrics are counted at. plain fp32 also runs with
the next seed (with --seeds 1) or every seed (with more), and the relative range of those runs is the noise
floor: two float orders of summation are as different as two seeds once training amplifies them, so a
difference near that spread says "noise", one far above it says "the setting changes results".
Runs are seeded with `trainer.deterministic=warn`: deterministic kernels wherever torch has one (CUDA has
none for a few backward passes, such as adaptive average pooling's, and warns there instead of failing).
Trailing arguments are Hydra overrides for every run (e.g. data.root=... on another machine). Writes
<out>/fidelity.{md,json}; finished runs in <out>/fidelity_runs are reused unless --rerun.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import save  # benchmarks/ is on sys.path when a script runs

from voc_dl.run_files import METRICS

SECTIONS = {  # experiment -> extra overrides
    "autoencoder": ["model.code_size=2048"],
    "autoencoder_improved": ["model.code_size=2048"],
    "classification": ["model=deep_cnn"],
    "segmentation": ["model.loss=dice"],
}
# experiment -> (epochs, train batches per epoch, validation batches); None = the whole split.
LENGTH = {
    "autoencoder": (8, 12, 4),  # leaves its "mean image" plateau around epoch 4 (docs/performance.md, Fidelity)
    "autoencoder_improved": (3, 12, 4),
    "classification": (10, None, None),  # thresholded metrics need a trained net and the whole val split
    "segmentation": (3, 12, 4),
}
TOLERANCE = 0.05
# Overrides that do not change what a run computes: a finished run made with other values is still reused.
# (Not the plumbing list of conf/hydra/default.yaml: that one holds the epochs and data set, which do.)
NEUTRAL = ("trainer.deterministic", "data.cache_dir", "hydra.")


def made_with(metrics: dict, overrides: list[str]) -> bool:
    """Was this finished run trained with these overrides (their values, the neutral ones aside)?"""
    def values(items) -> dict[str, str]:
        return {o.lstrip("+").partition("=")[0]: o.partition("=")[2].strip("'").lower() for o in items
                if not o.startswith("~")}
    have = values(metrics.get("overrides", []))
    return all(have.get(k) == v for k, v in values(overrides).items() if not k.startswith(NEUTRAL))


def length(experiment: str, args) -> tuple[int, int | None, int | None]:
    epochs, train, val = LENGTH[experiment]
    pick = lambda given, planned: planned if given is None else (None if given <= 0 else given)  # noqa: E731
    return (args.epochs or epochs, pick(args.limit_train_batches, train), pick(args.limit_val_batches, val))


def train(experiment: str, args, out: Path) -> tuple[dict[str, list[dict]], tuple]:
    """Finished metrics.json of each run, as {"fp32": [...], "default": [...]} in seed order."""
    epochs, train_batches, val_batches = plan = length(experiment, args)
    sweep = out / "fidelity_runs" / f"{experiment}_{epochs}x{train_batches or 'all'}"
    limits = [f"++trainer.limit_train_batches={train_batches or 1.0}",
              f"++trainer.limit_val_batches={val_batches or 1.0}"]
    overrides = [f"experiment={experiment}", f"dataset={args.dataset}", *SECTIONS[experiment],
                 f"trainer.max_epochs={epochs}", "trainer.deterministic=warn", *limits, "~logger", *args.overrides,
                 f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir='fp32=${fp32},seed=${seed}'"]
    train_cmd = [sys.executable, "-m", "voc_dl.train", "-m"]
    seeds = list(range(args.seed, args.seed + args.seeds))
    plan_runs = {"fp32": seeds + ([args.seed + 1] if args.seeds == 1 else []), "default": seeds}
    folders = {(name, seed): sweep / f"fp32={name == 'fp32'},seed={seed}"
               for name, run_seeds in plan_runs.items() for seed in run_seeds}

    def full(key: tuple[str, int]) -> list[str]:
        return [*overrides, f"fp32={str(key[0] == 'fp32').lower()}", f"seed={key[1]}"]

    def finished(key: tuple[str, int]) -> bool:
        path = folders[key] / METRICS
        if not path.exists():
            return False
        if made_with(json.loads(path.read_text()), full(key)):
            return True
        print(f"{folders[key]} was trained with other overrides: training it again", flush=True)
        return False

    todo = [key for key in folders if args.rerun or not finished(key)]

    def launch(key: tuple[str, int]) -> None:
        if args.jobs == 1:
            subprocess.run([*train_cmd, *full(key)], check=True)
            return
        sweep.mkdir(parents=True, exist_ok=True)  # parallel runs each log to a file, not the console
        log = sweep / f"{folders[key].name}.log"
        with log.open("w") as f:
            if subprocess.run([*train_cmd, *full(key)], stdout=f, stderr=subprocess.STDOUT).returncode:
                raise RuntimeError(f"{experiment} {folders[key]} failed; its output is in {log}")

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(launch, todo))  # list() re-raises the first failure
    found: dict[str, list[dict]] = {}
    for (name, _), folder in folders.items():
        metrics = json.loads((folder / METRICS).read_text())
        if metrics["status"] != "ok":
            raise RuntimeError(f"{experiment} {folder} failed: {metrics.get('error')}")
        found.setdefault(name, []).append(metrics)
    return found, plan


def compare(experiment: str, runs: dict[str, list[dict]], plan: tuple, n_seeds: int) -> list[dict]:
    ref_runs, fast_runs = runs["fp32"][:n_seeds], runs["default"]
    rows = []
    for key in ref_runs[0]["val"]:
        ref = statistics.fmean(r["val"][key] for r in ref_runs)
        fast = statistics.fmean(r["val"][key] for r in fast_runs)
        every_fp32 = [r["val"][key] for r in runs["fp32"]]
        scale = max(abs(statistics.fmean(every_fp32)), 1e-12)
        rel = abs(fast - ref) / max(abs(ref), 1e-12)
        rows.append({"section": experiment, "metric": key, "fp32": ref, "default": fast, "rel_diff": rel,
                     "fp32_runs": every_fp32, "default_runs": [r["val"][key] for r in fast_runs],
                     "seed_spread": (max(every_fp32) - min(every_fp32)) / scale, "ok": rel <= TOLERANCE,
                     "default_precision": fast_runs[0]["precision"], "epochs": plan[0],
                     "train_batches": plan[1], "val_batches": plan[2], "seeds": n_seeds,
                     "device": fast_runs[0]["hardware"].get("device"),
                     "fp32_wall_s": statistics.fmean(r["wall_time_s"] for r in ref_runs),
                     "default_wall_s": statistics.fmean(r["wall_time_s"] for r in fast_runs)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="shared_voc")
    ap.add_argument("--epochs", type=int, help="every section (default: LENGTH per section)")
    ap.add_argument("--limit-train-batches", type=int, help="every section; 0 = the whole split")
    ap.add_argument("--limit-val-batches", type=int, help="every section; 0 = the whole split (the same "
                                                           "validation batches in every run either way)")
    ap.add_argument("--seeds", type=int, default=1, help="fp32 and default each train with this many seeds")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (a GPU can take several small ones)")
    ap.add_argument("--rerun", action="store_true", help="train again even where a finished run exists")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--out", default="outputs/bench")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides added to every run")
    args = ap.parse_args()
    if args.seeds < 1 or args.jobs < 1:
        ap.error("--seeds and --jobs must be at least 1")
    out = Path(args.out)
    rows = []
    for experiment in args.sections.split(","):
        if experiment not in SECTIONS:
            ap.error(f"--sections: unknown section {experiment!r}; allowed: {', '.join(SECTIONS)}")
        runs, plan = train(experiment, args, out)
        rows += compare(experiment, runs, plan, args.seeds)
    all_ok = all(r["ok"] for r in rows)
    device = rows[0]["device"] if rows else "?"
    meta = {"dataset": args.dataset, "seeds": args.seeds, "first_seed": args.seed, "overrides": args.overrides,
            "device": device, "tolerance": TOLERANCE, "all_within_tolerance": all_ok}
    mean = f"mean of seeds {args.seed}-{args.seed + args.seeds - 1}" if args.seeds > 1 else f"seed {args.seed}"
    lines = [f"# Fidelity: plain fp32 versus the fast default ({args.dataset}, {device}, {mean})", "",
             f"Every metric within {100 * TOLERANCE:.0f}% relative: **{'yes' if all_ok else 'NO'}**. "
             "Seed spread: the relative range of every plain-fp32 run"
             + (f" (seeds {args.seed} and {args.seed + 1})" if args.seeds == 1 else "") + ", the noise floor.", "",
             "| section | epochs x train batches (val batches) | metric | fp32 | default | default precision "
             "| relative difference | fp32 runs | seed spread | wall s fp32 / default |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        plan = f"{r['epochs']} x {r['train_batches'] or 'all'} ({r['val_batches'] or 'all'})"
        spread = " / ".join(f"{v:.4g}" for v in r["fp32_runs"])
        lines.append(f"| {r['section']} | {plan} | {r['metric']} | {r['fp32']:.5f} | {r['default']:.5f} | "
                     f"{r['default_precision']} | {100 * r['rel_diff']:.2f}% | {spread} | "
                     f"{100 * r['seed_spread']:.2f}% | {r['fp32_wall_s']:.0f} / {r['default_wall_s']:.0f} |")
    save(out, "fidelity", meta, rows, lines)
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
