"""Data flows one way (VOC tree -> cache -> DataModule -> task -> run folder -> report): a lower layer
never imports a higher one or an entry point, at module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

ENTRY_POINTS = ("voc_dl.train", "voc_dl.eval", "voc_dl.pseudo_label", "voc_dl.demo", "voc_dl.predict",
                "voc_dl.export")
FORBIDDEN = {
    # the data layer runs no network: a teacher's masks come from voc_dl.pseudo_label, as files
    "voc_dl/data": ("voc_dl.tasks", "voc_dl.models", "voc_dl.checkpoints", "voc_dl.report", *ENTRY_POINTS),
    "voc_dl/models": ("voc_dl.tasks", "voc_dl.report", *ENTRY_POINTS),
    "voc_dl/tasks": ("voc_dl.report", *ENTRY_POINTS),
    "voc_dl/report": ENTRY_POINTS,
    "voc_dl/checkpoints.py": ("voc_dl.report", *ENTRY_POINTS),
}


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer):
    files = [ROOT / layer] if layer.endswith(".py") else sorted((ROOT / layer).rglob("*.py"))
    assert files
    wrong = {f"{f.relative_to(ROOT)} imports {name}" for f in files for name in imports(f)
             if name.startswith(FORBIDDEN[layer])}
    assert not wrong, sorted(wrong)


def test_the_walk_sees_function_level_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from voc_dl.eval import load_task\n")
    assert "voc_dl.eval" in imports(probe)
