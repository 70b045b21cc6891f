"""`make demo`: the whole study, briefly, on the embedded synthetic data, then the report.

    python -m voc_dl.demo [--out outputs/demo] [--epochs 2] [hydra overrides for every run ...]

Each section runs as the real Hydra sweeps do (subprocesses of `python -m voc_dl.train -m ...`),
only shorter; the data pipeline summary, the tables and where to find everything are printed.
Trailing overrides (`make demo ARGS="data.root=... data.year=2012"`) go to every run and win over
the demo's own settings of the same key.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from voc_dl.report.__main__ import build


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merged(own: list[str], user: list[str]) -> list[str]:
    """The demo's overrides, minus those whose key the user's overrides set again, then the user's."""
    keys = {_key(o) for o in user}
    return [o for o in own if o.startswith("-") or _key(o) not in keys] + user


def _quote(arg: str) -> str:
    """Shell quoting a user would type: "key='a=b'" rather than shlex's '"'"' chains."""
    if shlex.quote(arg) == arg or any(c in arg for c in '"$`\\'):
        return shlex.quote(arg)
    return f'"{arg}"'


def run(args: list[str], user: list[str]) -> None:
    cmd = [sys.executable, "-m", "voc_dl.train", *merged(args, user)]
    python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") \
        else sys.executable
    print("\n$ " + " ".join(_quote(a) for a in [python, *cmd[1:]]), flush=True)
    subprocess.run(cmd, check=True)


def section1_encoder(sweep: Path) -> Path | None:
    """The best checkpoint of the sweep's 8192-code autoencoder, found by its record, not its folder name."""
    for metrics in sorted(sweep.glob("*/metrics.json")):
        m = json.loads(metrics.read_text())
        if m.get("status") == "ok" and m.get("config", {}).get("model", {}).get("code_size") == 8192:
            return Path(m["best_ckpt"]) if m.get("best_ckpt") else None
    return None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/demo")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. data.root=... debug=fast")
    args = ap.parse_args(argv)
    user = args.overrides
    out = Path(args.out)
    study = out / "study"
    started = time.time()
    e = f"trainer.max_epochs={args.epochs}"
    # Section 1: the code-size sweep (MSE) on a few batches per epoch: the AE costs ~17 GFLOP per image step.
    run(["-m", "experiment=autoencoder", "model.code_size=2048,4096,8192", e, "debug=demo",
         f"hydra.sweep.dir={study}/autoencoder"], user)
    # Section 2: the frozen Section 1 encoder, the retrained encoder and the deep CNN.
    encoder = section1_encoder(study / "autoencoder")
    if encoder:  # quoted: the path holds '=', which Hydra's override grammar would split on
        run(["-m", "experiment=classification", "model=frozen_encoder", f"model.encoder_ckpt='{encoder}'", e,
             f"hydra.sweep.dir={study}/classification/frozen"], user)
    else:
        print("\nno frozen-encoder classifier: the 8192-code autoencoder wrote no checkpoint (fast_dev_run?)")
    run(["-m", "experiment=classification", "model=encoder,deep_cnn", e, "debug=demo",
         f"hydra.sweep.dir={study}/classification/others"], user)
    # Section 3: BCE versus Dice loss on the study's segmenter, and the U-Net.
    run(["-m", "experiment=segmentation", "model=segnet,unet", "model.loss=bce,dice", "debug=demo",
         f"trainer.max_epochs={2 * args.epochs}", f"hydra.sweep.dir={study}/segmentation"], user)
    written = build(study, out / "report")
    print("\n" + "=" * 100)
    data = json.loads(next((study / "segmentation").rglob("metrics.json")).read_text())["data"]
    kind = "synthetic VOC tree" if data.get("synthetic") else "VOC tree"
    print(f"data: {kind} at {data['root']} ({data['train_images']} train / {data['val_images']} val "
          "segmentation pairs; cached, memory-mapped)")
    for what in written.values():
        if what:
            print(what["table"])
    figures = [str(f) for what in written.values() if what for f in what["figures"]]
    print(f"figures: {', '.join(figures)}")
    print(f"demo finished in {time.time() - started:.0f} s; runs under {study}, report under {out / 'report'}; "
          f"TensorBoard: make tensorboard LOGDIR={study}")


if __name__ == "__main__":
    main()
