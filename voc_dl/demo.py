"""`make demo`: the whole study, shortened, on the embedded synthetic data, then the report.

    python -m voc_dl.demo [--out outputs/demo] [--jobs 2] [hydra overrides for every run ...]

Each section runs as the real Hydra sweeps do (subprocesses of `python -m voc_dl.train -m ...`), shortened
by its conf/debug/demo_<section>.yaml (`shortened()` says how). Two chains of runs go side by side with one torch
thread each (--jobs 1: one run after another, torch's own threads): the autoencoders and then the classifier
on their encoder, beside the segmenters and then the other classifiers. Each run's output goes to a log
under <out>/logs; the commands (to copy and lengthen), each run's result, the tables and where to find
everything are printed. Trailing overrides (`make demo ARGS="data.root=... data.year=2012"`) go to every
run and win over the demo's own settings of the same key.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf

from voc_dl.config import CONF_DIR, override_key
from voc_dl.report.__main__ import build
from voc_dl.run_files import METRICS


def shortened() -> list[str]:
    """What the demo shortens (conf/debug/demo_*.yaml) against the study's recipes (conf/experiment/*.yaml)."""
    sections = ("autoencoder", "classification", "segmentation")
    ae, cls, seg = (OmegaConf.load(CONF_DIR / "debug" / f"demo_{s}.yaml") for s in sections)
    s_ae, s_cls, s_seg = (OmegaConf.load(CONF_DIR / "experiment" / f"{s}.yaml") for s in sections)
    size, study_size = ae.data.image_size, s_ae.data.image_size
    codes = ", ".join(f"{c} -> {c * size**2 // study_size**2}" for c in (2048, 4096, 8192))
    return [
        f"autoencoders: {ae.trainer.max_epochs} epochs (study: {s_ae.trainer.max_epochs}) of the improved recipe "
        "(experiment=autoencoder_improved: batch-norm, AdamW, a cosine schedule; the study's RMSprop does not "
        f"learn in so few steps), on {size}x{size} images (study: {study_size}), so each code size keeps the "
        f"study's encoder depth but codes fewer variables ({codes})",
        f"classifiers: {cls.trainer.max_epochs} epochs (study: {s_cls.trainer.max_epochs}) of batch "
        f"{cls.data.batch_size} (study: {s_cls.data.batch_size}) on {cls.data.image_size}x{cls.data.image_size} "
        f"images (study: {s_cls.data.image_size}); the frozen encoder is the demo's 8192-code autoencoder's, "
        "with its batch-norm",
        f"segmenters: {seg.trainer.max_epochs} epochs (study: {s_seg.trainer.max_epochs}) of batch "
        f"{seg.data.batch_size} (study: {s_seg.data.batch_size})",
        "every run picks its best epoch on its first few validation batches (trainer.limit_val_batches), then "
        "scores that checkpoint on the whole validation split, as the baselines are",
    ]


def merged(own: list[str], user: list[str]) -> list[str]:
    """The demo's overrides, minus those whose key the user's overrides set again, then the user's."""
    keys = {override_key(o) for o in user}
    return [o for o in own if o.startswith("-") or override_key(o) not in keys] + user


def _quote(arg: str) -> str:
    """Shell quoting a user would type: "key='a=b'" rather than shlex's '"'"' chains."""
    if shlex.quote(arg) == arg or any(c in arg for c in '"$`\\'):
        return shlex.quote(arg)
    return f'"{arg}"'


_print_lock = threading.Lock()


def say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


def _python() -> str:
    rel = os.path.relpath(sys.executable)
    return sys.executable if rel.startswith("..") else rel


# voc_dl.train's DONE_LINE and FAILED_LINE (tests/test_demo.py formats them and reads them back)
DONE = re.compile(r"(done: .*?) \| checkpoint .*\| run folder (\S+)")
FAILED = re.compile(r"job failed \(recorded in (\S+?)/" + re.escape(METRICS) + r"\): (.*)")

# glibc hands the large activation buffers a training step frees back to the system, and the next step
# page-faults them in again: with these thresholds it keeps them. Measured on the 2-core EPYC, one thread,
# a 64 px autoencoder epoch: 21 s -> 14 s (system time 10.5 -> 1.6 s). The user's own settings win.
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


SHOWN = ("val/mse", "val/map", "val/subset_acc", "val/dice", "val/iou")  # the headline numbers of the sections


def result(run_dir: Path) -> str | None:
    """A finished run's headline numbers (whole validation split), epochs and wall time, from its metrics.json."""
    try:
        m = json.loads((run_dir / METRICS).read_text())
    except (OSError, ValueError):
        return None
    shown = ", ".join(f"{k} {m['val'][k]:.4f}" for k in SHOWN if k in m.get("val", {}))
    best = f"best epoch {m['best_epoch']} of {m.get('epochs')}" if m.get("best_epoch") is not None else \
        f"{m.get('epochs')} epoch(s)"
    return f"{shown} on the {m['data']['val_images']} val images ({best}, {m.get('wall_time_s', 0):.0f} s)"


def run(name: str, args: list[str], user: list[str], logs: Path) -> bool:
    """One `voc_dl.train` command, its output in logs/<name>.log; prints the command and each job's result.

    Returns False when the command failed as a whole (a failing job of a sweep is recorded and reported,
    and the sweep goes on, as voc_dl.train does)."""
    cmd = [sys.executable, "-m", "voc_dl.train", *merged(args, user)]
    log = logs / f"{name}.log"
    say(f"\n[{name}] $ " + " ".join(_quote(a) for a in [_python(), *cmd[1:]]) + f"\n[{name}]   output: {log}")
    started = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                env={**ALLOCATOR, **os.environ})
        for line in proc.stdout:
            out.write(line)
            if m := DONE.search(line):
                say(f"[{name}]   {Path(m.group(2)).name}: {result(Path(m.group(2))) or m.group(1)}")
            elif m := FAILED.search(line):
                say(f"[{name}]   {Path(m.group(1)).name}: FAILED: {m.group(2)}")
        rc, cpu = _wait(proc)
    took = f"{time.time() - started:.0f} s ({cpu:.0f} s of CPU time)"
    if rc:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        say(f"[{name}]   FAILED (exit status {rc}) after {took}; end of {log}:\n{tail}")
        return False
    say(f"[{name}]   finished in {took}")
    return True


def _wait(proc: subprocess.Popen) -> tuple[int, float]:
    """The exit status of a finished command and the CPU time (user + system) it used."""
    if not hasattr(os, "wait4"):  # not POSIX
        return proc.wait(), float("nan")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def section1_encoder(sweep: Path) -> tuple[Path, bool] | None:
    """The best checkpoint of the sweep's 8192-code autoencoder, found by its record, not its folder name,
    and whether its encoder has batch-norm."""
    for metrics in sorted(sweep.glob(f"*/{METRICS}")):
        m = json.loads(metrics.read_text())
        model = m.get("config", {}).get("model", {})
        if m.get("status") == "ok" and model.get("code_size") == 8192 and m.get("best_ckpt"):
            return Path(m["best_ckpt"]), bool(model.get("norm"))
    return None


Step = tuple[str, Callable[[], list[str] | None]]  # a name, and the command's overrides (None: skip it)


def chains(study: Path, threads: list[str]) -> list[list[Step]]:
    """The demo's runs as two chains, each run after the one before it in its chain."""
    def frozen() -> list[str] | None:
        found = section1_encoder(study / "autoencoder")
        if not found:
            say("\nno frozen-encoder classifier: the 8192-code autoencoder wrote no checkpoint")
            return None
        encoder, norm = found
        # quoted: the path holds '=', which Hydra's override grammar would split on
        return ["experiment=classification", "model=frozen_encoder", f"model.encoder_ckpt='{encoder}'",
                f"model.net.norm={str(norm).lower()}", "debug=demo_classification", *threads,
                f"hydra.run.dir={study}/classification/frozen"]

    return [
        [("autoencoder", lambda: ["-m", "experiment=autoencoder_improved", "model.code_size=2048,4096,8192",
                                  "debug=demo_autoencoder", *threads, f"hydra.sweep.dir={study}/autoencoder"]),
         ("classifier-frozen", frozen)],
        [("segmentation", lambda: ["-m", "experiment=segmentation", "model=segnet,unet", "model.loss=bce,dice",
                                   "debug=demo_segmentation", *threads, f"hydra.sweep.dir={study}/segmentation"]),
         ("classifier-encoder", lambda: ["experiment=classification", "model=encoder",
                                         "debug=demo_classification", *threads,
                                         f"hydra.run.dir={study}/classification/encoder"]),
         ("classifier-deep-cnn", lambda: ["experiment=classification", "model=deep_cnn", "debug=demo_classification",
                                          *threads, f"hydra.run.dir={study}/classification/deep_cnn"])],
    ]


def run_chain(chain: list[Step], user: list[str], logs: Path, failed: list[str]) -> None:
    for name, args in chain:
        overrides = args()
        if overrides is not None and not run(name, overrides, user, logs):
            failed.append(name)


def _cpu_time() -> str:
    """The CPU time (user + system) of the demo and its runs: the wall time's measure on a shared machine."""
    try:
        import resource
    except ImportError:
        return ""
    used = sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))
    return f"; {used:.0f} s of CPU time on {os.cpu_count()} cores"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/demo")
    ap.add_argument("--jobs", type=int, default=2, choices=[1, 2],
                    help="chains of runs side by side: 2 (one torch thread each) or 1 (one run after another)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. data.root=... debug=fast")
    args = ap.parse_args(argv)
    out = Path(args.out)
    study, logs = out / "study", out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.time()
    say("voc-dl demo: the study's three sections, shortened to run in minutes on a CPU (by default on the "
        "embedded synthetic VOC tree, not VOC2009):\n" + "\n".join(f"  - {line}" for line in shortened()))
    threads = [f"threads={max(1, (os.cpu_count() or 1) // args.jobs)}"] if args.jobs > 1 else []
    failed: list[str] = []
    if args.jobs > 1:
        workers = [threading.Thread(target=run_chain, args=(c, args.overrides, logs, failed), daemon=True)
                   for c in chains(study, threads)]
        for w in workers:
            w.start()
        for w in workers:
            while w.is_alive():  # a timed join, so that Ctrl-C reaches this thread
                w.join(0.5)
    else:
        for chain in chains(study, threads):
            run_chain(chain, args.overrides, logs, failed)
    trained = time.time() - started
    say("\nwriting the report ...")
    written = build(study, out / "report")
    print("\n" + "=" * 100)
    data = next((json.loads(p.read_text()).get("data") for p in sorted(study.rglob(METRICS))
                 if json.loads(p.read_text()).get("data", {}).get("task") == "segmentation"), None)
    if data:
        kind = "synthetic VOC tree" if data.get("synthetic") else "VOC tree"
        print(f"data: {kind} at {data['root']} ({data['train_images']} train / {data['val_images']} val "
              "segmentation pairs; cached, memory-mapped)")
    for what in written.values():
        if what:
            print(what["table"])
    figures = [str(f) for what in written.values() if what for f in what["figures"]]
    print(f"figures: {', '.join(figures)}")
    print("shortened (conf/debug/demo_*.yaml):\n" + "\n".join(f"  - {line}" for line in shortened()))
    side = "two chains of runs side by side" if args.jobs > 1 else "one run at a time"
    print(f"demo finished in {time.time() - started:.0f} s ({trained:.0f} s training, {side}{_cpu_time()}); "
          f"runs under {study}, logs under {logs}, report under {out / 'report'}; "
          f"TensorBoard: make tensorboard LOGDIR={study}")
    if failed:
        raise SystemExit(f"voc-dl demo: these runs failed: {', '.join(failed)} (their logs are under {logs})")


if __name__ == "__main__":
    main()
