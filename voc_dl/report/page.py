"""One self-contained report: `report.md` and `index.html` with the tables, figures and every run."""

from __future__ import annotations

import csv
import html
import os
from pathlib import Path

from voc_dl.callbacks import atomic_write_text
from voc_dl.report import autoencoder, classification, segmentation
from voc_dl.report.common import fmt
from voc_dl.report.runs import Run

SECTIONS = [  # title, table, {figure file: caption}
    ("Section 1: convolutional autoencoder", "table1", autoencoder.FIGURES),
    ("Section 2: multi-label classifiers", "table2", classification.FIGURES),
    ("Section 3: binary segmentation", "table3", segmentation.FIGURES),
]
RUN_COLUMNS = ["task", "run", "status", "epochs", "seed", "wall s", "hardware", "overrides", "error"]


def run_rows(runs: list[Run], out: Path) -> list[dict]:
    rows = []
    for r in runs:
        m = r.metrics
        rows.append({"task": r.task, "run": os.path.relpath(r.path, out), "status": r.status,
                     "epochs": m.get("epochs"), "seed": m.get("seed"), "wall s": m.get("wall_time_s"),
                     "hardware": (m.get("hardware") or {}).get("device", "-"),
                     "overrides": " ".join(m.get("overrides", [])), "error": (m.get("error") or "")[:160]})
    return rows


def _html_table(rows: list[dict], link_key: str | None = None) -> str:
    if not rows:
        return "<p>(none)</p>"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = []
    for r in rows:
        cells = []
        for k in keys:
            text = html.escape(fmt(_number(r.get(k))))
            if k == link_key and r.get(k):
                text = f'<a href="{html.escape(str(r[k]))}">{text}</a>'
            cls = ' class="bad"' if k == "status" and r.get(k) not in ("ok", None, "") else ""
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _number(value):
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


def write(out: Path, runs: list[Run]) -> tuple[Path, Path]:
    out = Path(out)
    md, body = ["# voc-dl report", "", "Every number below was read from the runs' own files "
                "(metrics.json, history.csv); the study's numbers stand beside ours.", ""], []
    for title, table, figures in SECTIONS:
        md += [f"## {title}", ""]
        body.append(f"<h2>{html.escape(title)}</h2>")
        if (out / f"{table}.md").is_file():
            md.append((out / f"{table}.md").read_text())
            with open(out / f"{table}.csv") as f:
                rows = list(csv.DictReader(f))
            lines = (out / f"{table}.md").read_text().splitlines()
            notes = [line[2:] for line in lines if line.startswith("- ")]
            body.append(f"<h3>{html.escape(lines[0].lstrip('# '))}</h3>")
            body.append(_html_table(rows, link_key="run"))
            body += [f"<p class=note>{html.escape(n)}</p>" for n in notes]
        else:
            md.append("No runs of this section yet.\n")
            body.append("<p>No runs of this section yet.</p>")
        for fig, caption in figures.items():
            if (out / fig).is_file():
                md.append(f"![{caption}]({fig})\n\n*{caption}*\n")
                body.append(f'<figure><img src="{fig}" alt="{html.escape(caption)}">'
                            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    rows = run_rows(runs, out)
    md += ["## Runs", "", "| " + " | ".join(RUN_COLUMNS) + " |", "|" + "---|" * len(RUN_COLUMNS)]
    md += ["| " + " | ".join(fmt(r[k]) for k in RUN_COLUMNS) + " |" for r in rows]
    body += ["<h2>Runs</h2>", "<p>Failed, interrupted and missing runs are listed too.</p>",
             _html_table(rows, link_key="run")]
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
             "font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}th{background:#eee}"
             "td.bad{background:#fdd}img{max-width:900px}.note{font-size:12px;color:#444}")
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>voc-dl report</title><style>{style}</style>"
            f"</head><body><h1>voc-dl report</h1>{''.join(body)}</body></html>")
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    atomic_write_text(out / "index.html", page)
    return out / "index.html", out / "report.md"
