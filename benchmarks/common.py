"""What every benchmark does with its results: JSON and markdown under outputs/bench, the table printed."""

from __future__ import annotations

import json
from pathlib import Path


def save(out: Path, name: str, meta: dict, rows: list[dict], lines: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
