"""Every command in the README's code blocks runs as written, so the docs cannot rot.

Commands run in order, in a fresh folder laid out like a checkout (`.venv`, and `../shared` where it
exists), with tiny-run overrides appended to training commands; `<placeholder>` path parts resolve to
the newest match of what earlier commands wrote. `make` commands run as `make -n` (they are long).
`python -m voc_dl...` commands are processes forked from an interpreter that imported voc-dl already
(tests/launch.py: the same argv, folder, environment and output, without ~8 s of imports each);
VOC_DL_TEST_FRESH=1 starts a real interpreter for each.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests import launch
from tests.conftest import ROOT, SHARED_VOC

# Appended to a training command unless it sets the key itself: one short epoch of small batches of 64 px
# images (every run scores its best checkpoint on the whole validation split, and at the study's 128 px that is
# most of a tiny autoencoder run's time), and a search of one such trial.
TINY = ("debug=tiny", "trainer.max_epochs=1", "data.batch_size=2", "data.image_size=64")
SEARCH_TINY = ("hydra.sweeper.n_trials=1",)
# training on the embedded data (no dataset= or data.root=): a synthetic tree of 64 images instead of 320 (every
# such command of the test gets the same, so they share one tree; eval reads the tree its run trained on)
SYNTHETIC_TINY = ("data.synthetic.n_images=64",)
ENTRY = re.compile(r"^(\S*python\S*\s+-m\s+voc_dl\b|\S*voc-dl-[a-z]+\b|make\b)")


def readme_commands(text: str) -> list[str]:
    """voc-dl and make commands of the README's fenced code blocks, comments and continuations removed."""
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            if ENTRY.match(line.strip()):
                commands.append(shlex.join(shlex.split(line, comments=True)))
    return commands


COMMANDS = readme_commands((ROOT / "README.md").read_text())


def test_the_readme_has_commands_of_every_kind():
    kinds = {c.split()[0].rsplit("/", 1)[-1] + (" -m " + c.split()[2] if " -m " in c else "") for c in COMMANDS}
    assert {"make", "python -m voc_dl.train", "python -m voc_dl.eval", "python -m voc_dl.predict",
            "python -m voc_dl.export"} <= kinds, kinds
    assert any(" -m voc_dl.train -m " in c for c in COMMANDS), "a sweep"


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A folder laid out like the user's checkout, without the outputs and data of this one."""
    base = tmp_path
    work = base / "voc-dl"
    work.mkdir()
    venv = ROOT / ".venv" if (ROOT / ".venv").is_dir() else Path(sys.prefix)
    (work / ".venv").symlink_to(venv)
    if SHARED_VOC.is_dir():
        (base / "shared").symlink_to(SHARED_VOC.parent)
    return work


def resolve_placeholders(words: list[str], work: Path, skipped: list[str] = ()) -> list[str]:
    out = []
    for w in words:
        m = re.search(r"(['\"]?)([^'\"=]*<[^>]+>[^'\"]*)\1$", w)
        if m:
            # a sweep folder named by overrides also names the tiny-run ones appended here: match a prefix
            pattern = "/".join(f"*{part}" if "=" in part else part
                               for part in re.sub(r"<[^>]+>", "*", m.group(2)).split("/"))
            found = sorted(work.glob(pattern), key=lambda p: p.stat().st_mtime)
            if not found and skipped:
                pytest.skip(f"{w}: no earlier README command wrote {pattern}; skipped here: {skipped[-1]}")
            assert found, f"{w}: no earlier README command wrote {pattern}"
            w = w[: m.start(2)] + str(found[-1].relative_to(work)) + w[m.end(2):]
        out.append(w)
    return out


def with_tiny_overrides(words: list[str]) -> list[str]:
    def runs(entry: str) -> bool:
        return any(w in (f"voc_dl.{entry}", f"voc-dl-{entry}") or w.endswith(f"/voc-dl-{entry}") for w in words)

    keys = {w.split("=", 1)[0].lstrip("+~") for w in words if "=" in w}
    synthetic = SYNTHETIC_TINY if runs("train") and not keys & {"dataset", "data.root"} else ()
    tiny = (TINY + (SEARCH_TINY if "hparams_search" in keys else ()) if runs("train") else ()) + synthetic
    return words + [o for o in tiny if o.split("=", 1)[0] not in keys]


def run_records(work: Path) -> dict[Path, dict]:
    return {p: json.loads(p.read_text()) for p in (work / "outputs").rglob("metrics.json")}


def test_readme_commands_run_as_written(checkout, subtests):
    # one test, in order: later commands read what earlier ones wrote (and test workers must not split them)
    skipped: list[str] = []  # commands skipped for want of ../shared: what later ones read from them is not there
    for command in COMMANDS:
        with subtests.test(command=command):
            run_readme_command(command, checkout, skipped)


def run_readme_command(command: str, checkout: Path, skipped: list[str] | None = None) -> None:
    words = shlex.split(command)
    if ("shared_voc" in command or "../shared/" in command) and not SHARED_VOC.is_dir():
        if skipped is not None:
            skipped.append(command)
        pytest.skip(f"needs {SHARED_VOC}")
    env = {**os.environ, "PATH": f"{checkout / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    if words[0] == "make":
        out = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, f"{command}\n{out.stderr[-2000:]}"
        return
    words = resolve_placeholders(words, checkout, skipped or [])
    if "--cfg" not in words:  # Hydra takes no overrides after --cfg's value
        words = with_tiny_overrides(words)
    before = run_records(checkout)
    out = launch.run(words, cwd=checkout, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{shlex.join(words)}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    if "--cfg" in words or "voc_dl.report" in words:
        return
    new = {p: m for p, m in run_records(checkout).items() if p not in before}
    assert new, f"{command}: wrote no metrics.json under outputs/"
    assert all(m["status"] == "ok" for m in new.values()), {str(p): m.get("error") for p, m in new.items()}
    if "voc_dl.train" in words and words.count("-m") == 2:  # a sweep lands in Hydra's sweep folder
        assert all(p.relative_to(checkout).parts[:2] == ("outputs", "multiruns") for p in new), list(new)
    if any(w.startswith("hparams_search=") for w in words):  # a search, in its own folder beside its study
        assert all(p.relative_to(checkout).parts[:2] == ("outputs", "searches") for p in new), list(new)
        assert all((p.parent.parent / "study.db").is_file() for p in new), list(new)
