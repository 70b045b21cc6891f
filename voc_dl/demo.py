"""`make demo`: the whole study, briefly, on the embedded synthetic data, then the report.

    python -m voc_dl.demo [--out outputs/demo] [--epochs 2]

Each section runs as the real Hydra sweeps do (subprocesses of `python -m voc_dl.train -m ...`),
only shorter; the data pipeline summary, the tables and where to find everything are printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from voc_dl.report.__main__ import build


def run(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "voc_dl.train", *args]
    print("\n$ " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/demo")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args(argv)
    out = Path(args.out)
    study = out / "study"
    started = time.time()
    e = f"trainer.max_epochs={args.epochs}"
    # Section 1: the code-size sweep (MSE) on a few batches per epoch: the AE costs ~17 GFLOP per image step.
    run(["-m", "experiment=autoencoder", "model.code_size=2048,4096,8192", e, "debug=demo",
         f"hydra.sweep.dir={study}/autoencoder"])
    # Quoted in the override below: the path holds '=', which Hydra's override grammar would split on.
    encoder = study / "autoencoder" / "model.code_size=8192" / "checkpoints" / "best.ckpt"
    # Section 2: the frozen Section 1 encoder, the retrained encoder and the deep CNN.
    run(["-m", "experiment=classification", "model=frozen_encoder", f"model.encoder_ckpt='{encoder}'", e,
         f"hydra.sweep.dir={study}/classification/frozen"])
    run(["-m", "experiment=classification", "model=encoder,deep_cnn", e, "debug=demo",
         f"hydra.sweep.dir={study}/classification/others"])
    # Section 3: BCE versus Dice loss on the study's segmenter, and the U-Net.
    run(["-m", "experiment=segmentation", "model=segnet,unet", "model.loss=bce,dice", "debug=demo",
         f"trainer.max_epochs={2 * args.epochs}", f"hydra.sweep.dir={study}/segmentation"])
    written = build(study, out / "report")
    print("\n" + "=" * 100)
    data = json.loads(next((study / "segmentation").rglob("metrics.json")).read_text())["data"]
    print(f"data: synthetic VOC tree at {data['root']} ({data['train_images']} train / {data['val_images']} val "
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
