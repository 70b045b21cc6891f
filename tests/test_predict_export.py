"""Predicting on a user's own images (`voc_dl.predict`) and exporting a network (`voc_dl.export`), called as
users call them, against answers computed here from the network itself.

The checkpoints are random-init networks at 32 px in the format voc_dl.train writes: what predict and export do
with a network does not depend on its training. The flow of issue 21 on real photographs, with trained
checkpoints, is the slow test at the end.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from tests.conftest import ROOT, SHARED_VOC, assert_fp32_close, composer
from voc_dl.checkpoints import load_task
from voc_dl.config import ConfigError
from voc_dl.data.image_files import find_images
from voc_dl.data.voc import VOCDataError, decode_image, load_image
from voc_dl.export import EXTRA_FILE, export
from voc_dl.predict import CSV_NAME, output_names, predict
from voc_dl.train import build

SIZE = 32
RUNS = {
    "segmentation": ["experiment=segmentation", "model=unet", "model.net.filters=[4,8,8,8]"],
    "classification": ["experiment=classification", "model=deep_cnn", "model.net.filters=[8,8,8,8,8]"],
    "reconstruction": ["experiment=autoencoder", "model.code_size=2048"],
}
COLOR = {"segmentation": "gray", "classification": "rgb", "reconstruction": "rgb"}
# in-process runs: plain fp32 on the CPU, so the answers computed here are the same arithmetic
EXACT = ("fp32=true", "trainer.accelerator=cpu")


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, synthetic_root) -> dict[str, Path]:
    """A random-init checkpoint of each task, holding what Lightning's checkpoint holds for load_task: the
    task's and the DataModule's hyperparameters (under Lightning's keys), the weights, the task class."""
    tmp = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for task, overrides in RUNS.items():
        cfg = composer(tmp / task, synthetic_root)([*overrides, f"data.image_size={SIZE}", "~logger"])
        datamodule, model, _ = build(cfg)
        if task == "segmentation":  # random init answers ~0.39 everywhere: spread the logits over (0, 1)
            with torch.no_grad():
                model.net.out.weight.mul_(100)
        ckpt = {"state_dict": model.state_dict(),
                pl.LightningModule.CHECKPOINT_HYPER_PARAMS_KEY: dict(model.hparams),
                pl.LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY: dict(datamodule.hparams)}
        model.on_save_checkpoint(ckpt)
        paths[task] = tmp / f"{task}.ckpt"
        torch.save(ckpt, paths[task])
    GlobalHydra.instance().clear()
    return paths


def smooth(h: int, w: int, channels: int, peak: int = 255) -> np.ndarray:
    """A gradient image (JPEG keeps it well, unlike noise)."""
    y, x = np.mgrid[0:h, 0:w]
    planes = [(x / max(1, w - 1)), (y / max(1, h - 1)), ((x + y) / max(1, w + h - 2))][:channels]
    image = np.round(np.stack(planes, -1) * peak)
    return image[..., 0] if channels == 1 else image


@pytest.fixture(scope="session")
def user_images(tmp_path_factory, synthetic_root) -> Path:
    """A user's folder: a photograph, grayscale, RGBA, CMYK, 16-bit and palette files, a broken JPEG, a note."""
    folder = tmp_path_factory.mktemp("my_photos")
    photo = sorted((synthetic_root / "VOCdevkit" / "VOC2009" / "JPEGImages").glob("*.jpg"))[0]
    shutil.copy(photo, folder / "photo.jpg")
    Image.fromarray(smooth(31, 17, 1).astype(np.uint8)).save(folder / "gray.png")
    rgba = np.concatenate([smooth(20, 25, 3), np.full((20, 25, 1), 255.0)], -1).astype(np.uint8)
    rgba[:, :10, 3] = 0  # a transparent left part
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray(smooth(22, 26, 3).astype(np.uint8)).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(smooth(19, 23, 1, peak=65535).astype(np.uint16)).save(folder / "deep.png")
    Image.fromarray(smooth(18, 21, 3).astype(np.uint8)).quantize(8).save(folder / "palette.gif")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    (folder / "notes.txt").write_text("not an image: a folder input leaves it out\n")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_predict(tmp_path, synthetic_root, ckpt: Path, spec, *overrides) -> tuple[dict, list[dict]]:
    cfg = composer(tmp_path, synthetic_root)([f"ckpt_path='{ckpt}'", f"input='{spec}'", *EXACT, *overrides],
                                             config_name="predict.yaml")
    result = predict(cfg)
    GlobalHydra.instance().clear()
    with open(Path(result["out"]) / CSV_NAME, newline="") as f:
        return result, list(csv.DictReader(f))


def network_input(path: Path, color: str) -> torch.Tensor:
    return torch.from_numpy(load_image(path, SIZE, color).copy()).permute(2, 0, 1)[None].float() / 255


def gap_threshold(values: np.ndarray) -> float:
    """A threshold near the median in the widest gap between neighbouring values: no value sits on it, so
    float summation order cannot move a pixel or a label across it."""
    v = np.unique(values.ravel())
    middle = slice(len(v) * 3 // 10, max(len(v) * 7 // 10, len(v) * 3 // 10 + 2))
    gaps = np.diff(v)[middle]
    i = middle.start + int(np.argmax(gaps))
    assert v[i + 1] - v[i] > 2e-6, "no gap wider than fp32 summation order moves a value"
    return float((v[i] + v[i + 1]) / 2)


# -- reading the user's files --------------------------------------------------------------------------------
def test_non_rgb_files_are_converted_not_refused(user_images):
    gray = decode_image(user_images / "gray.png")
    assert gray.mode == "RGB"
    assert (np.asarray(gray) == np.asarray(Image.open(user_images / "gray.png"))[..., None]).all()
    deep = np.asarray(Image.open(user_images / "deep.png"), dtype=np.int64)
    assert deep.max() > 60000  # 16 bits really
    assert (np.asarray(decode_image(user_images / "deep.png"))[..., 0] == deep >> 8).all()  # top 8 bits, not clipped
    rgba = np.asarray(Image.open(user_images / "rgba.png"))
    out = np.asarray(decode_image(user_images / "rgba.png"))
    assert (out[:, :10] == 255).all() and (out[:, 10:] == rgba[:, 10:, :3]).all()  # transparent -> white
    cmyk = decode_image(user_images / "cmyk.jpg")
    assert cmyk.mode == "RGB" and cmyk.size == (26, 22)
    assert decode_image(user_images / "palette.gif").mode == "RGB"
    rotated = user_images.parent / "rotated.jpg"  # a camera's portrait shot: stored landscape, EXIF says turn it
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(smooth(10, 30, 3).astype(np.uint8)).save(rotated, exif=exif)
    assert decode_image(rotated).size == (10, 30)
    with pytest.raises(VOCDataError, match="broken.jpg"):
        decode_image(user_images / "broken.jpg")


def test_inputs_are_a_file_a_folder_or_a_glob(user_images, tmp_path):
    images = ["broken.jpg", "cmyk.jpg", "deep.png", "gray.png", "palette.gif", "photo.jpg", "rgba.png"]
    assert [p.name for p in find_images(user_images)] == images  # notes.txt is no image
    assert find_images(user_images / "notes.txt") == [user_images / "notes.txt"]  # named: read, and reported
    assert [p.name for p in find_images(f"{user_images}/*.png")] == ["deep.png", "gray.png", "rgba.png"]
    with pytest.raises(VOCDataError, match="matches no file"):
        find_images(f"{user_images}/*.heic")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find_images(tmp_path / "nowhere")
    # output names: the path below the common folder; the suffix only where two names would collide
    assert output_names([Path("a/x.jpg"), Path("a/b/x.jpg"), Path("a/y.jpg"), Path("a/y.png")]) == [
        "x", "b/x", "y.jpg", "y.png"]


# -- predict -------------------------------------------------------------------------------------------------
def test_segmentation_writes_masks_at_each_images_size_overlays_and_a_csv(checkpoints, user_images, tmp_path,
                                                                          synthetic_root):
    task, _ = load_task(checkpoints["segmentation"])
    readable = [p for p in find_images(user_images) if p.name != "broken.jpg"]
    with torch.no_grad():
        probs = {p.name: torch.sigmoid(task.net(network_input(p, "gray")))[0, 0].numpy() for p in readable}
    threshold = gap_threshold(np.concatenate([v.ravel() for v in probs.values()]))
    before = snapshot(user_images)
    out = tmp_path / "predictions"
    result, rows = run_predict(tmp_path, synthetic_root, checkpoints["segmentation"], user_images,
                               f"out='{out}'", f"threshold={threshold}", "batch_size=3")
    assert snapshot(user_images) == before  # nothing written beside the inputs
    assert [Path(r["image"]).name for r in rows] == [p.name for p in find_images(user_images)]
    bad = rows[0]
    assert bad["error"].startswith(f"corrupt or truncated image {user_images / 'broken.jpg'}") and bad["mask"] == ""
    for row in rows[1:]:
        path = Path(row["image"])
        w, h = Image.open(path).size
        assert (int(row["width"]), int(row["height"])) == (w, h) and row["error"] == ""
        mask = Image.open(out / row["mask"])
        assert mask.mode == "P" and mask.size == (w, h)  # the image's own size
        expected = Image.fromarray((probs[path.name] > threshold).astype(np.uint8)).resize((w, h), Image.NEAREST)
        assert (np.asarray(mask) == np.asarray(expected)).all()
        assert float(row["foreground_fraction"]) == pytest.approx(np.asarray(expected).mean(), abs=1e-6)
        overlay = Image.open(out / row["overlay"])
        assert overlay.format == "JPEG" and overlay.size == (w, h)
    fractions = [float(r["foreground_fraction"]) for r in rows[1:]]
    assert 0 < sum(fractions) < len(fractions)  # the threshold splits: masks are neither all 0 nor all 1
    assert result["unreadable"] == 1 and result["images"] == 7
    assert result["mean_foreground_fraction"] == pytest.approx(np.mean(fractions), abs=1e-6)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "ok" and record["preprocessing"]["resize"].startswith(f"bilinear (Pillow) to {SIZE}x")
    # the photograph's overlay: its foreground tinted, its background as it was
    photo = next(r for r in rows if r["image"].endswith("photo.jpg"))
    fg = np.asarray(Image.open(out / photo["mask"])) == 1
    diff = np.abs(np.asarray(Image.open(out / photo["overlay"]), float) - np.asarray(decode_image(Path(photo["image"])),
                                                                                      float)).mean(-1)
    assert diff[fg].mean() > 30 > 6 > diff[~fg].mean()


def test_segmentation_with_flip_tta_thresholds_the_mean_of_both_logits(checkpoints, user_images, tmp_path,
                                                                       synthetic_root):
    task, _ = load_task(checkpoints["segmentation"])
    path = user_images / "photo.jpg"
    x = network_input(path, "gray")
    with torch.no_grad():
        prob = torch.sigmoid((task.net(x) + task.net(x.flip(-1)).flip(-1)) / 2)[0, 0].numpy()
    threshold = gap_threshold(prob)
    _, [row] = run_predict(tmp_path, synthetic_root, checkpoints["segmentation"], path, "tta=true",
                           f"threshold={threshold}")
    expected = Image.fromarray((prob > threshold).astype(np.uint8)).resize(Image.open(path).size, Image.NEAREST)
    assert (np.asarray(Image.open(tmp_path / "run" / row["mask"])) == np.asarray(expected)).all()


def test_classification_lists_each_class_probability_and_the_labels_above_threshold(checkpoints, user_images,
                                                                                     tmp_path, synthetic_root):
    task, data = load_task(checkpoints["classification"])
    classes = data["classes"]
    readable = [p for p in find_images(user_images) if p.name != "broken.jpg"]
    with torch.no_grad():
        probs = torch.sigmoid(task.net(torch.cat([network_input(p, "rgb") for p in readable]))).numpy()
    threshold = gap_threshold(probs)
    # a glob, and the error stops at the broken file when asked to
    with pytest.raises(VOCDataError, match="broken.jpg.*on_bad_image=skip"):
        run_predict(tmp_path, synthetic_root, checkpoints["classification"], f"{user_images}/*.*", "on_bad_image=error")
    result, rows = run_predict(tmp_path, synthetic_root, checkpoints["classification"], f"{user_images}/*.*",
                               f"threshold={threshold}")
    rows = {Path(r["image"]).name: r for r in rows}
    assert rows.pop("notes.txt")["error"] and rows.pop("broken.jpg")["error"]  # a glob takes what it matches
    assert list(rows) == [p.name for p in readable]
    for p, row in zip(probs, rows.values(), strict=True):
        got = np.array([float(row[c]) for c in classes])
        np.testing.assert_allclose(got, p, rtol=0, atol=5e-7 + 1e-6)  # six decimals, and fp32 order
        assert row["labels"].split() == [c for c, v in zip(classes, p, strict=True) if v > threshold]
    counts = result["images_per_label"]
    assert counts == {c: int((probs[:, k] > threshold).sum()) for k, c in enumerate(classes)}
    assert 0 < sum(counts.values()) < probs.size


def test_reconstruction_shows_input_beside_output_and_lists_mse_and_mae(checkpoints, user_images, tmp_path,
                                                                         synthetic_root):
    task, _ = load_task(checkpoints["reconstruction"])
    files = [user_images / "cmyk.jpg", user_images / "photo.jpg"]
    result, rows = run_predict(tmp_path, synthetic_root, checkpoints["reconstruction"], f"{user_images}/[pc]*.jpg")
    assert [Path(r["image"]) for r in rows] == files
    mse = []
    for path, row in zip(files, rows, strict=True):
        x = network_input(path, "rgb")
        with torch.no_grad():
            err = task.net(x) - x
        assert float(row["mse"]) == pytest.approx(err.square().mean().item(), rel=1e-5)
        assert float(row["mae"]) == pytest.approx(err.abs().mean().item(), rel=1e-5)
        pair = np.asarray(Image.open(tmp_path / "run" / row["reconstruction"]))
        assert pair.shape == (SIZE, 2 * SIZE, 3)
        assert (pair[:, :SIZE] == load_image(path, SIZE, "rgb")).all()  # the input as the network reads it
        mse.append(err.square().mean().item())
    assert result["mean_mse"] == pytest.approx(np.mean(mse), rel=1e-5)


def test_predict_refuses_to_write_among_the_inputs_and_tta_for_a_classifier(checkpoints, user_images, tmp_path,
                                                                            synthetic_root):
    before = snapshot(user_images)
    for out in (user_images, user_images / "predictions"):
        with pytest.raises(ConfigError, match="never writes beside them"):
            run_predict(tmp_path, synthetic_root, checkpoints["segmentation"], user_images, f"out='{out}'")
    with pytest.raises(ConfigError, match="tta=true is the segmenters'"):
        run_predict(tmp_path, synthetic_root, checkpoints["classification"], user_images, "tta=true")
    assert snapshot(user_images) == before


# -- export --------------------------------------------------------------------------------------------------
def parity_images(synthetic_root: Path, n: int = 4) -> list[Path]:
    """Real photographs where ../shared/voc is there, the synthetic tree's otherwise."""
    tree = SHARED_VOC / "VOCdevkit" / "VOC2012" if SHARED_VOC.is_dir() else synthetic_root / "VOCdevkit" / "VOC2009"
    return sorted((tree / "JPEGImages").glob("*.jpg"))[:n]


def reduction_terms(net: torch.nn.Module) -> int:
    """Rounding bound of a deep net for assert_fp32_close: each conv or linear layer's sums reorder by about
    sqrt(fan-in) roundings, and a layer's error passes on to the next, so the layers' bounds add up:
    terms = (sum of sqrt(fan-in))^2."""
    fan_ins = [m.weight[0].numel() for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    fan_ins += [m.weight.shape[0] * m.weight[0, 0].numel() for m in net.modules()
                if isinstance(m, torch.nn.ConvTranspose2d)]
    return int(sum(f ** 0.5 for f in fan_ins) ** 2)


def run_export(tmp_path, synthetic_root, ckpt: Path, fmt: str, out: Path) -> dict:
    cfg = composer(tmp_path, synthetic_root)([f"ckpt_path='{ckpt}'", f"format={fmt}", f"out='{out}'"],
                                             config_name="export.yaml")
    result = export(cfg)
    GlobalHydra.instance().clear()
    return result


# Runs in a fresh interpreter with torch alone: each TorchScript file on the saved images, and its metadata.
FRESH = """
import json, sys, torch
name = sys.argv[2]
for path, inputs, out in json.loads(sys.argv[1]):
    extra = {name: ""}
    model = torch.jit.load(path, _extra_files=extra)
    with torch.no_grad():
        torch.save({"y": model(torch.load(inputs)), "meta": json.loads(extra[name])}, out)
"""


def test_torchscript_files_run_in_a_fresh_process_as_pytorch_does(checkpoints, tmp_path, synthetic_root):
    jobs, expected = [], {}
    for task, ckpt in checkpoints.items():
        model, data = load_task(ckpt)
        x = torch.cat([network_input(p, COLOR[task]) for p in parity_images(synthetic_root)])  # batch 4, traced at 2
        with torch.no_grad():
            expected[task] = (model.infer(x), reduction_terms(model.net))
        result = run_export(tmp_path, synthetic_root, ckpt, "torchscript", tmp_path / f"{task}.pt")
        assert result["check"]["max_abs_diff"] <= result["check"]["atol"]
        torch.save(x, tmp_path / f"{task}_x.pt")
        jobs.append([str(tmp_path / f"{task}.pt"), str(tmp_path / f"{task}_x.pt"), str(tmp_path / f"{task}_y.pt")])
    out = subprocess.run([sys.executable, "-c", FRESH, json.dumps(jobs), EXTRA_FILE], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for task, (want, terms) in expected.items():
        saved = torch.load(tmp_path / f"{task}_y.pt")
        assert_fp32_close(saved["y"], want, terms=terms)
        meta = saved["meta"]
        assert meta["task"] == task and meta["image_size"] == str(SIZE) and meta["color"].startswith(COLOR[task])
        assert meta["scaling"].startswith("uint8 / 255")
        if task == "classification":
            assert json.loads(meta["classes"]) == load_task(checkpoints[task])[1]["classes"]
            assert meta["threshold"] == "0.5" and meta["output_kind"] == "probabilities"
        if task == "reconstruction":
            assert "classes" not in meta and meta["output_kind"] == "reconstruction"


@pytest.mark.slow  # torch's ONNX exporter takes 3-8 s per network on 2 CPU cores
def test_onnx_files_run_in_onnxruntime_as_pytorch_does(checkpoints, tmp_path, synthetic_root):
    import onnx
    import onnxruntime as ort

    for task, ckpt in checkpoints.items():
        model, data = load_task(ckpt)
        x = torch.cat([network_input(p, COLOR[task]) for p in parity_images(synthetic_root)])
        with torch.no_grad():
            want = model.infer(x)
        path = tmp_path / f"{task}.onnx"
        result = run_export(tmp_path, synthetic_root, ckpt, "onnx", path)
        assert result["check"]["max_abs_diff"] <= result["check"]["atol"]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        [given] = session.get_inputs()
        assert given.name == "image" and given.shape[0] == "batch" and given.shape[1:] == list(x.shape[1:])
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])  # batch 4, exported at 2
        assert_fp32_close(got, want, terms=reduction_terms(model.net))
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert meta["task"] == task and meta["image_size"] == str(SIZE)
        if task == "classification":
            assert json.loads(meta["classes"]) == data["classes"] and meta["threshold"] == "0.5"


def test_onnx_without_the_export_extra_says_how_to_install_it(checkpoints, tmp_path, synthetic_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"format=onnx needs onnxscript.*pip install -e '\.\[export\]'"):
        run_export(tmp_path, synthetic_root, checkpoints["segmentation"], "onnx", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# -- the flow of issue 21, as a user runs it --------------------------------------------------------------------
def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, f"{args}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_VOC.is_dir(), reason=f"needs the real photographs in {SHARED_VOC}")
@pytest.mark.parametrize("experiment", ["segmentation", "classification", "autoencoder"])
def test_train_then_predict_and_export_on_twenty_real_photographs(experiment, tmp_path):
    """Train a tiny model, predict on a folder of 20 real VOC photographs, export it to ONNX and compare the file in
    onnxruntime with PyTorch on those photographs."""
    import onnxruntime as ort

    data = ["dataset=shared_voc", f"data.root={SHARED_VOC}", f"data.cache_dir={tmp_path / 'cache'}"]
    # debug=tiny, not debug=fast: fast_dev_run (debug=fast) writes no checkpoint
    cli(["voc_dl.train", f"experiment={experiment}", "debug=tiny", *data, "hydra.run.dir=run"], tmp_path)
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    photos = tmp_path / "photos"  # a user's folder of photographs (links to them: ../shared stays read-only)
    photos.mkdir()
    for p in sorted((SHARED_VOC / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[::100][:20]:
        (photos / p.name).symlink_to(p)
    cli(["voc_dl.predict", f"ckpt_path={ckpt}", "input=photos", "out=predicted"], tmp_path)
    with open(tmp_path / "predicted" / CSV_NAME, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and not any(r["error"] for r in rows)
    if experiment == "segmentation":
        for row in rows:
            size = Image.open(row["image"]).size
            assert Image.open(tmp_path / "predicted" / row["mask"]).size == size
            assert Image.open(tmp_path / "predicted" / row["overlay"]).size == size
        assert len(list((tmp_path / "predicted" / "masks").iterdir())) == 20
        assert len(list((tmp_path / "predicted" / "overlays").iterdir())) == 20
    cli(["voc_dl.export", f"ckpt_path={ckpt}", "format=onnx", "out=model.onnx", "hydra.run.dir=export"], tmp_path)
    record = json.loads((tmp_path / "export" / "metrics.json").read_text())
    assert record["status"] == "ok"
    model, trained_on = load_task(ckpt)
    x = torch.from_numpy(np.stack([load_image(p, trained_on["image_size"], trained_on["color"])
                                   for p in sorted(photos.iterdir())])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        want = model.infer(x)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    assert_fp32_close(got, want, terms=reduction_terms(model.net))
    print(f"{experiment}: ONNX in onnxruntime against PyTorch on 20 photographs: max |difference| "
          f"{(got - want).abs().max().item():.3g} (outputs up to {want.abs().max().item():.3g})")
