"""One self-contained report: `report.md` and `index.html` with the tables, figures and every run."""

from __future__ import annotations

import csv
import html
from pathlib import Path
from urllib.parse import quote

from voc_dl.atomic import atomic_write_text
from voc_dl.report import autoencoder, classification, search, segmentation
from voc_dl.report.common import fmt, fmt_spread, md_cell, relative, shown_columns, spread_of
from voc_dl.report.runs import Run

SECTIONS = [  # title, table, {figure file: caption} or a function of the report folder giving them
    ("Section 1: convolutional autoencoder", "table1", autoencoder.FIGURES),
    ("Section 2: multi-label classifiers", "table2", classification.FIGURES),
    ("Section 3: binary segmentation", "table3", segmentation.FIGURES),
    ("Hyperparameter searches", search.TABLE, search.figures),
]
RUN_COLUMNS = ["task", "data", "run", "status", "epochs", "seed", "tags", "wall s", "hardware", "overrides", "error"]
INTRO = ("Every number below was read from the runs' own files (metrics.json, history.csv), but for a run that "
         "validated only part of the validation split: its best checkpoint was scored again on the whole split, "
         "as the baselines are, and its row says 're-scored'.")
STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1400px}"
         ".scroll{overflow-x:auto;max-width:100%}"  # a wide table scrolls inside the page, never widens it
         "table{border-collapse:collapse;font-size:11px;margin:1em 0}"
         "td,th{border:1px solid #ccc;padding:2px 4px;vertical-align:top}th{background:#eee}"
         # paths and error messages break anywhere, so that they never make a table wider than the page
         "td.long{overflow-wrap:anywhere;min-width:12em}td.n{white-space:nowrap;text-align:right}"
         "td.bad{background:#fdd}"
         "figure{margin:1.5em 0}img{max-width:100%;height:auto}figcaption{font-size:13px;max-width:60em}"
         ".note{font-size:12px;color:#444}.data{border:1px solid #ccc;padding:.5em 1em}"
         ".warn{background:#fff3cd;border:1px solid #d9b44a;padding:.5em 1em}")


def data_note(names: list[str]) -> str:
    """What the data sets the runs used mean beside the study's: the first thing a reader of any number must
    know."""
    note = ("Runs marked 'synthetic' trained and validated on voc-dl's generated VOC-like images, not on "
            "photographs: their numbers check the pipeline and say nothing about the study's task. "
            if "synthetic" in names else "")
    return note + "The study's numbers beside ours are for VOC2009 (cat, motorbike, bottle)."


def run_rows(runs: list[Run]) -> list[dict]:
    rows = []
    for r in runs:
        m = r.metrics
        rows.append({"task": r.task, "data": r.data_name, "run": str(r.path.resolve()), "status": r.status,
                     "epochs": m.get("epochs"), "seed": m.get("seed"), "tags": ",".join(m.get("tags") or []),
                     "wall s": m.get("wall_time_s"),
                     "hardware": (m.get("hardware") or {}).get("device", "-"),
                     "overrides": " ".join(m.get("overrides", [])), "error": (m.get("error") or "")[:160]})
    return rows


def _html_cell(value, column: str, out: Path, spread: float | None = None) -> str:
    if column == "run" and value:
        rel = relative(value, out)
        return f'<td class=long><a href="{html.escape(quote(rel))}/">{html.escape(rel)}</a></td>'
    value = _number(value)
    text = fmt_spread(float(value), spread) if spread is not None else fmt(value, column)
    classes = ["n"] if isinstance(value, int | float) else ["long"] if len(text) > 30 else []
    if column == "status" and value not in ("ok", None, ""):
        classes.append("bad")
    attr = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{attr}>{html.escape(text)}</td>"


def _html_table(rows: list[dict], out: Path) -> str:
    if not rows:
        return "<p>(none)</p>"
    keys = shown_columns(list(dict.fromkeys(k for r in rows for k in r)))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(_html_cell(r.get(k), k, out, spread_of(r, k)) for k in keys) + "</tr>"
                   for r in rows)
    return f"<div class=scroll><table><tr>{head}</tr>{body}</table></div>"


def _number(value):
    """A CSV cell as the number it holds, so that it is formatted as one."""
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
    names = sorted({r.data_name for r in runs} - {"?"})
    data = f"Data of these runs: {', '.join(names) or 'none recorded'}."
    md = ["# voc-dl report", "", f"**{data}** {data_note(names)}", "", INTRO, ""]
    body = [f"<p class={'warn' if 'synthetic' in names else 'data'}><b>{html.escape(data)}</b> "
            f"{html.escape(data_note(names))}</p>", f"<p>{html.escape(INTRO)}</p>"]
    for title, table, figures in SECTIONS:
        figures = figures(out) if callable(figures) else figures
        md += [f"## {title}", ""]
        body.append(f"<h2>{html.escape(title)}</h2>")
        if (out / f"{table}.md").is_file():
            md.append((out / f"{table}.md").read_text())
            with open(out / f"{table}.csv") as f:
                rows = list(csv.DictReader(f))
            lines = (out / f"{table}.md").read_text().splitlines()
            notes = [line[2:] for line in lines if line.startswith("- ")]
            body.append(f"<h3>{html.escape(lines[0].lstrip('# '))}</h3>")
            body.append(_html_table(rows, out))
            body += [f"<p class=note>{html.escape(n)}</p>" for n in notes]
        else:
            md.append("No runs of this section yet.\n")
            body.append("<p>No runs of this section yet.</p>")
        for fig, caption in figures.items():
            if (out / fig).is_file():
                md.append(f"![{caption}]({fig})\n\n*{caption}*\n")
                body.append(f'<figure><img src="{fig}" alt="{html.escape(caption)}">'
                            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    rows = run_rows(runs)
    md += ["## Runs", "", "| " + " | ".join(RUN_COLUMNS) + " |", "|" + "---|" * len(RUN_COLUMNS)]
    md += ["| " + " | ".join(md_cell(r[k], k, out) for k in RUN_COLUMNS) + " |" for r in rows]
    body += ["<h2>Runs</h2>", "<p>Failed, interrupted and missing runs are listed too.</p>", _html_table(rows, out)]
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>voc-dl report</title><style>{STYLE}</style>"
            f"</head><body><h1>voc-dl report</h1>{''.join(body)}</body></html>")
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    atomic_write_text(out / "index.html", page)
    return out / "index.html", out / "report.md"
