"""Runs record where they came from: the code's commit and dirty flag, null where there is no git checkout."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from omegaconf import OmegaConf

from voc_dl import provenance


def git(folder, *args) -> str:
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="no git on this machine")
def test_the_commit_and_dirty_flag_of_the_code_that_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "CODE_DIR", tmp_path)
    assert provenance.git_state() == {"commit": None, "dirty": None}, "not a checkout (an installed wheel)"
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "first")
    head = git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "notes.txt").write_text("untracked files do not make the code dirty\n")
    assert provenance.git_state() == {"commit": head, "dirty": False}
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.git_state() == {"commit": head, "dirty": True}


def test_no_git_at_all_is_recorded_as_null(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert provenance.git_state() == {"commit": None, "dirty": None}


@pytest.mark.parametrize("tags, expected", [("[]", []), ("[dev, holdout]", ["dev", "holdout"]), ("dev", ["dev"])])
def test_tags_are_a_list_of_words(tags, expected):
    assert provenance.tags(OmegaConf.create(f"tags: {tags}")) == expected
