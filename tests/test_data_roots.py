"""A user's data root is read-only to voc-dl: every entry point, called as a user calls it, leaves every
file of a real-looking VOCdevkit tree as it was (path and sha256), and writes only into its own folders."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import launch
from tests.conftest import ROOT
from voc_dl.data.synthetic import MARKER, make_synthetic_voc


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def user_tree(root: Path) -> Path:
    """A VOC2012 tree that voc-dl did not generate: no markers, a file of the user's own, and photographs
    that no Segmentation list names (what self-training labels)."""
    make_synthetic_voc(root, "2012", n_images=32, seed=11)
    for marker in root.rglob(MARKER):
        marker.unlink()
    base = root / "VOCdevkit" / "VOC2012"
    seg = base / "ImageSets" / "Segmentation"
    kept = {split: (seg / f"{split}.txt").read_text().split()[:12] for split in ("train", "val")}
    for split, ids in [*kept.items(), ("trainval", kept["train"] + kept["val"])]:
        (seg / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "NOTES.txt").write_text("my photographs, do not touch\n")
    return root


def run(cmd: list[str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    out = launch.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert (out.returncode == 0) == ok, f"{' '.join(cmd)}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


def newest(pattern: str, where: Path) -> Path:
    found = sorted(where.glob(pattern), key=lambda p: p.stat().st_mtime)
    assert found, f"nothing matches {where}/{pattern}"
    return found[-1]


def test_every_entry_point_leaves_the_users_tree_unchanged(tmp_path):
    tree = user_tree(tmp_path / "myvoc")
    before = snapshot(tree)
    work = tmp_path / "work"  # where the user runs voc-dl: outputs/ and data/ land here
    work.mkdir()
    py = sys.executable
    data = [f"data.root={tree}", "data.year=2012"]

    def unchanged(after_what: str) -> None:
        assert snapshot(tree) == before, f"{after_what} changed the data root"

    # The command: dataset=synthetic is the default, data.root names a real tree. It trains on that tree.
    run([py, "-m", "voc_dl.train", "experiment=segmentation", *data, "debug=tiny", "trainer.max_epochs=1",
         "data.batch_size=4"], work)
    unchanged("voc_dl.train")
    metrics = json.loads(newest("outputs/runs/segmentation/*/metrics.json", work).read_text())
    assert metrics["status"] == "ok" and metrics["data"]["root"] == str(tree) and not metrics["data"]["synthetic"]
    assert metrics["data"]["train_images"] == 12  # the shortened Segmentation list of the user's tree
    ckpt = metrics["best_ckpt"]

    # pseudo-labelling writes into the folder it is given, and only there; training then reads it
    run([py, "-m", "voc_dl.pseudo_label", f"ckpt_path='{ckpt}'", "out=pseudo", *data], work)
    unchanged("voc_dl.pseudo_label")
    manifest = json.loads((work / "pseudo" / "manifest.json").read_text())
    base = (tree / "VOCdevkit" / "VOC2012").resolve()
    assert manifest["tree"] == str(base) and manifest["images"] == len(list(base.glob("JPEGImages/*.jpg"))) - 24
    run([py, "-m", "voc_dl.train", "experiment=segmentation_selftrain", *data, "data.extra_masks=pseudo",
         "debug=fast"], work)
    unchanged("self-training (voc_dl.train data.extra_masks=...)")

    run([py, "-m", "voc_dl.eval", f"ckpt_path='{ckpt}'", *data], work)
    unchanged("voc_dl.eval")

    run([py, "-m", "voc_dl.report", "--runs", "outputs", "--out", "outputs/report"], work)
    unchanged("voc_dl.report")

    run([py, str(ROOT / "benchmarks" / "data_cache.py"), "--root", str(tree), "--year", "2012", "--repeats", "1"],
        work)
    unchanged("benchmarks/data_cache.py")

    # Pointing the synthetic generator at the user's folder is refused in one line, before anything is written.
    out = run([py, "-m", "voc_dl.train", f"data.synthetic.dir={tree}"], work, ok=False)
    unchanged("the synthetic generator")
    assert out.stderr.startswith("voc-dl: error: data.synthetic.dir=") and out.stderr.count("\n") == 1
    assert "holds files the synthetic generator did not write" in out.stderr
    assert not (work / "data" / "synthetic").exists() and (work / "outputs").is_dir()


@pytest.mark.slow  # a minute: four sweeps; its runs go through voc_dl.train and voc_dl.report, tested above
def test_the_demo_on_a_users_tree_leaves_it_unchanged(tmp_path):
    tree = user_tree(tmp_path / "myvoc")
    before = snapshot(tree)
    out = run([sys.executable, "-m", "voc_dl.demo", "--out", "outputs/demo", f"data.root={tree}", "data.year=2012",
               "debug=fast"], tmp_path)
    assert snapshot(tree) == before
    assert f"data: VOC tree at {tree}" in out.stdout


def test_a_root_that_does_not_exist_is_an_error_and_is_not_created(tmp_path):
    missing = tmp_path / "no" / "such" / "voc"
    out = run([sys.executable, "-m", "voc_dl.train", f"data.root={missing}", "debug=fast"], tmp_path, ok=False)
    assert out.stderr.strip() == (f"voc-dl: error: data.root={missing} does not exist (voc-dl reads data roots, "
                                  "it never creates them). Fix: point data.root at the folder that holds VOCdevkit/, "
                                  "or add data.download=true to fetch VOC there")
    assert not (tmp_path / "no").exists()


def test_the_generator_writes_only_into_an_empty_new_or_own_folder(tmp_path):
    from voc_dl.data.voc import VOCDataError

    make_synthetic_voc(tmp_path / "new", "2009", n_images=4, seed=0)  # missing: created
    (tmp_path / "empty").mkdir()
    make_synthetic_voc(tmp_path / "empty", "2009", n_images=4, seed=0)
    own = snapshot(tmp_path / "empty")
    make_synthetic_voc(tmp_path / "empty", "2009", n_images=4, seed=0)  # same parameters: reused as is
    assert snapshot(tmp_path / "empty") == own
    make_synthetic_voc(tmp_path / "empty", "2009", n_images=6, seed=0)  # its own tree: regenerated
    assert len(list((tmp_path / "empty" / "VOCdevkit" / "VOC2009" / "JPEGImages").iterdir())) == 6
    other = tmp_path / "other"
    (other / "VOCdevkit" / "VOC2009").mkdir(parents=True)
    (other / "VOCdevkit" / "VOC2009" / "a.jpg").write_bytes(b"someone's photograph")
    with pytest.raises(VOCDataError, match=rf"{other} holds files the synthetic generator did not write.*Fix"):
        make_synthetic_voc(other, "2009", n_images=4, seed=0)
    # a folder of its own in which someone put a VOC<year> tree: that tree is not the generator's to replace
    shutil.move(str(other / "VOCdevkit" / "VOC2009"), str(tmp_path / "empty" / "VOCdevkit" / "VOC2010"))
    with pytest.raises(VOCDataError, match="did not write"):
        make_synthetic_voc(tmp_path / "empty", "2010", n_images=4, seed=0)
    assert (tmp_path / "empty" / "VOCdevkit" / "VOC2010" / "a.jpg").read_bytes() == b"someone's photograph"


def test_download_adds_its_year_beside_the_users_files_and_an_interrupted_one_leaves_nothing(
        tmp_path, monkeypatch, served_tar):
    from torchvision.datasets import voc as tv_voc

    from voc_dl.data import voc

    tree = user_tree(tmp_path / "myvoc")
    before = snapshot(tree)
    url, md5 = served_tar
    monkeypatch.setitem(tv_voc.DATASET_YEAR_DICT, "2009", {"url": url, "filename": "VOC2009.tar", "md5": md5,
                                                           "base_dir": "VOCdevkit/VOC2009"})

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # killed while extracting: no half-written VOC2009
        m.setattr("torchvision.datasets.utils.extract_archive", interrupted)
        with pytest.raises(KeyboardInterrupt):
            voc.download_voc(tree, "2009")
    assert not (tree / "VOCdevkit" / "VOC2009").exists()
    assert not [p for p in (tree / "VOCdevkit").iterdir() if p.name.startswith(".")]
    voc.download_voc(tree, "2009")
    after = snapshot(tree)
    assert {k: v for k, v in after.items() if k in before} == before
    assert any(k.startswith("VOCdevkit/VOC2009/JPEGImages/") for k in after)


@pytest.fixture
def served_tar(tmp_path):
    """A VOC2009 tar behind a loopback HTTP server: the real downloader runs, nothing leaves the machine."""
    import functools
    import tarfile
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    src = tmp_path / "served"
    make_synthetic_voc(src / "tree", "2009", n_images=4, seed=2)
    with tarfile.open(src / "VOC2009.tar", "w") as t:
        t.add(src / "tree" / "VOCdevkit", arcname="VOCdevkit")
    md5 = hashlib.md5((src / "VOC2009.tar").read_bytes()).hexdigest()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(src))
    handler.log_message = lambda *a, **k: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/VOC2009.tar", md5
    server.shutdown()

