"""Writing tables (markdown + CSV) and figures (PNG) for the report."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from voc_dl.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402

DPI = 110  # of the saved figures


def fmt(value, column: str = "") -> str:
    """A table cell: seconds (a column named '... s') and numbers from 1000 up as whole numbers (thousands
    separated from 10,000), other numbers to 4 significant digits: metrics carry no more information."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return str(value)
    if column.endswith(" s") or isinstance(value, int) or abs(value) >= 1000:
        return f"{round(value):,}" if abs(value) >= 10000 else str(round(value))
    return f"{value:.4g}"


STD = " std"  # a column holding the standard deviation over seeds of the column it names (report/seeds.py)


def fmt_spread(mean: float, std: float) -> str:
    """'mean ± std', both to the decimal place of the standard deviation's second significant digit."""
    if not math.isfinite(std):
        return fmt(mean)
    if std <= abs(mean) * 1e-6:  # none, or float round-off between seeds that computed the same number
        return f"{fmt(mean)} ± 0"
    digits = max(0, 1 - math.floor(math.log10(abs(std))))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def shown_columns(keys) -> list[str]:
    """The columns a table shows: a '<column> std' is shown inside its column, as 'mean ± std'."""
    return [k for k in keys if not (k.endswith(STD) and k[: -len(STD)] in keys)]


def spread_of(row: dict, column: str):
    """The standard deviation beside a cell, as a number, or None."""
    std = row.get(column + STD)
    try:
        return None if std in (None, "") or math.isnan(float(std)) else float(std)
    except (TypeError, ValueError):
        return None


def relative(path: str | Path, out: Path) -> str:
    """A run folder as seen from the report folder: what the report's links point to."""
    return os.path.relpath(Path(path).resolve(), Path(out).resolve())


def write_table(out: Path, name: str, title: str, rows: list[dict], notes: list[str] = ()) -> str:
    """`<name>.csv` (raw values) and `<name>.md` (formatted, with notes); returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / f"{name}.csv", buf.getvalue())
    shown = shown_columns(keys)
    lines = [f"### {title}", "", "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(md_cell(r.get(k), k, out, spread_of(r, k)) for k in shown) + " |" for r in rows]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    md = "\n".join(lines) + "\n"
    atomic_write_text(out / f"{name}.md", md)
    return md


def md_cell(value, column: str, out: Path, spread: float | None = None) -> str:
    if column == "run" and value:
        return f"[{relative(value, out)}](<{relative(value, out)}/>)"
    if spread is not None:
        return fmt_spread(float(value), spread)
    return fmt(value, column)


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def whole_epochs(ax) -> None:
    """Epoch axes tick whole epochs only: a run of two epochs would otherwise show 0.2, 0.4, ..."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def to_hwc(t):
    """(C, H, W) tensor in [0, 1] -> array for imshow."""
    a = t.detach().float().clamp(0, 1).cpu()
    return a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()


def no_ticks(axes) -> None:
    """Image panels: no axis ticks."""
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
