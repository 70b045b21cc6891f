"""Build report tables and figures from run folders:

    python -m voc_dl.report --runs outputs/study --out outputs/report [--section autoencoder|...|all]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from voc_dl import cli
from voc_dl.report import autoencoder, classification, page, search, segmentation
from voc_dl.report.runs import collect

SECTIONS = {"autoencoder": autoencoder, "classification": classification, "segmentation": segmentation,
            "search": search}


def build(runs_dir: str | Path, out: str | Path, sections=tuple(SECTIONS)) -> dict:
    runs = collect(runs_dir)
    out = Path(out)
    written = {}  # the sections that had runs to report
    for name in sections:
        if what := SECTIONS[name].report(runs, out):
            written[name] = what
    page.write(out, runs)
    return written


def main(argv=None) -> None:
    logging.basicConfig(level=logging.WARNING)
    cli.quiet_third_parties()
    # re-scoring a run builds a Lightning trainer, whose device lines would repeat for every run
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    ap = argparse.ArgumentParser(description="voc-dl report: tables and figures from run folders")
    ap.add_argument("--runs", default="outputs/study", help="folder searched (recursively) for runs")
    ap.add_argument("--out", default="outputs/report")
    ap.add_argument("--section", default="all", choices=[*SECTIONS, "all"])
    args = ap.parse_args(argv)
    sections = tuple(SECTIONS) if args.section == "all" else (args.section,)
    written = build(args.runs, args.out, sections)
    for name in sections:
        if not (what := written.get(name)):
            print(f"{name}: no runs under {args.runs}")
            continue
        print(what["table"])
        for fig in what["figures"]:
            print(f"  figure: {fig}")
    print(f"report: {Path(args.out) / 'index.html'} and {Path(args.out) / 'report.md'}")


if __name__ == "__main__":
    main()
