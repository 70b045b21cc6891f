"""Finding runs and reading what they wrote (metrics.json, history.csv) and which data they used."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from voc_dl.config import override_key, plumbing_keys
from voc_dl.data.synthetic import generated
from voc_dl.run_files import HISTORY, METRICS, best_ckpt


@dataclass
class Run:
    path: Path
    metrics: dict
    history: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.metrics.get("status", "missing")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def status_line(self) -> str:
        """'ok', or the status with the start of the error: what a table's status column shows."""
        return self.status if self.ok else f"{self.status}: {self.metrics.get('error', '')[:80]}"

    @property
    def task(self) -> str:
        return self.metrics.get("task_name", "?")

    @property
    def model_cfg(self) -> dict:
        return (self.metrics.get("config") or {}).get("model", {})

    @property
    def data_cfg(self) -> dict:
        return (self.metrics.get("config") or {}).get("data", {})

    @property
    def data_name(self) -> str:
        """'synthetic' or 'VOC<year>': the data set the run's numbers are on ('?' when it recorded none)."""
        info = self.metrics.get("data") or {}
        if not (info or self.data_cfg):
            return "?"
        return "synthetic" if self.synthetic else f"VOC{info.get('year') or self.data_cfg.get('year')}"

    @property
    def synthetic(self) -> bool:
        info = self.metrics.get("data") or {}
        root = info.get("root") or self.data_cfg.get("root")
        year = info.get("year") or self.data_cfg.get("year")
        # a generated tree given as data.root is recorded as the user's data, but the generator marked it
        if root and generated(root, year):
            return True
        if "synthetic" in info:
            return bool(info["synthetic"])
        # runs from before metrics.json said so: the generated tree lived in data/synthetic; a run stopped
        # before its data were described generated one when its config names no root of the user's
        return str(root).rstrip("/").endswith("data/synthetic") if root else bool(self.data_cfg.get("synthetic"))

    @property
    def name(self) -> str:
        """The overrides that made this run, without the experiment and plumbing."""
        plumbing = plumbing_keys()
        kept = [o for o in self.metrics.get("overrides", []) if not o.startswith("hydra.")
                and override_key(o) not in plumbing]
        return ",".join(kept) or self.path.name

    def val(self, key: str, default=float("nan")) -> float:
        return self.metrics.get("val", {}).get(key, default)

    def test(self, key: str, default=float("nan")) -> float:
        """A metric of the best checkpoint on the test split (data.test_split), scored once after training."""
        return (self.metrics.get("test") or {}).get(key, default)

    def at_best(self, key: str, default=float("nan")) -> float:
        """A history value at the best epoch (train metrics of the checkpoint that was evaluated)."""
        best = self.metrics.get("best_epoch")
        rows = [r for r in self.history if best is not None and int(r["epoch"]) == best] or self.history[-1:]
        value = rows[0].get(key) if rows else None
        return float(value) if value not in (None, "") else default

    def last(self, key: str, default=float("nan")) -> float:
        """A history value at the last recorded epoch."""
        value = self.history[-1].get(key) if self.history else None
        return float(value) if value not in (None, "") else default

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        pts = [(int(r["epoch"]), float(r[key])) for r in self.history if r.get(key) not in (None, "")]
        return [p[0] for p in pts], [p[1] for p in pts]


def tested(runs: list[Run]) -> bool:
    """Whether any run has test numbers: then the tables show test columns beside the val ones."""
    return any(r.metrics.get("test") for r in runs)


def scored_on(runs: list[Run]) -> str:
    """What a table's title says its numbers are on."""
    return "validation and test" if tested(runs) else "validation"


def test_note(runs: list[Run]) -> list[str]:
    """The table note that says what the test columns are, when there are any."""
    splits = sorted({f"{d.get('test_split')} ({d.get('test_images')} images)"
                     for r in runs if r.metrics.get("test") for d in [r.metrics.get("data") or {}]})
    if not splits:
        return []
    return [f"test columns: each run's best checkpoint, picked on val, scored once on a split that model selection "
            f"never saw: {', '.join(splits)}; holdout = a fixed share of the train split, chosen by a hash of each "
            "image id and kept out of training (data.test_split, docs/data.md)."]


def read_run(path: Path) -> Run:
    metrics_file = path / METRICS
    if metrics_file.is_file():
        try:
            metrics = json.loads(metrics_file.read_text())
        except json.JSONDecodeError as e:
            metrics = {"status": "failed", "error": f"unreadable metrics.json: {e}"}
    else:  # a job that died before writing anything (killed, or failed before start-up finished)
        metrics = {"status": "missing", "error": "no metrics.json: the job never started or was killed"}
    if metrics.get("status") == "running":
        metrics = {**metrics, "status": "interrupted", "error": "metrics.json says running: killed mid-run?"}
    if "task_name" not in metrics and (path / ".hydra" / "config.yaml").is_file():
        from omegaconf import OmegaConf

        metrics["task_name"] = OmegaConf.load(path / ".hydra" / "config.yaml").get("task_name", "?")
        overrides = path / ".hydra" / "overrides.yaml"
        if overrides.is_file():
            metrics["overrides"] = list(OmegaConf.load(overrides))
    if "config" not in metrics and (path / ".hydra" / "config.yaml").is_file():
        metrics["config"] = saved_config(path)
    history = []
    if (path / HISTORY).is_file():
        with open(path / HISTORY) as f:
            history = list(csv.DictReader(f))
    if metrics["status"] != "ok" and "val" not in metrics and history:
        metrics = best_so_far(path, metrics, history)
    return Run(path, metrics, history)


def best_so_far(path: Path, metrics: dict, history: list[dict]) -> dict:
    """An unfinished run's validation metrics at its best epoch so far, read from history.csv.

    They are the metrics of its checkpoints/best.ckpt (saved on the same monitor), so an interrupted
    run still reports what it reached; its status says where the numbers come from.
    """
    watched = metrics.get("monitor") or saved_monitor(path)
    if not watched:  # no record of the monitor: leave the row empty rather than guess it
        return metrics
    monitor, mode = watched["metric"], watched["mode"]
    scored = [r for r in history if r.get(monitor) not in (None, "")]
    if not scored:
        return metrics
    pick = min if mode == "min" else max
    best = pick(scored, key=lambda r: float(r[monitor]))
    val = {k: float(v) for k, v in best.items() if k.startswith("val/") and v not in (None, "")}
    ckpt = best_ckpt(path)
    return {**metrics, "val": val, "epochs": len(history), "best_epoch": int(best["epoch"]),
            **({"best_ckpt": str(ckpt)} if ckpt.is_file() else {}),
            "error": f"val at best epoch {best['epoch']} of {len(history)} (history.csv); {metrics.get('error', '')}"}


def saved_monitor(path: Path) -> dict | None:
    """The run's monitor from .hydra/config.yaml (runs whose metrics.json lacks `monitor`)."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path / ".hydra" / "config.yaml")
        if "monitor" in cfg:
            return OmegaConf.to_container(cfg.monitor)
        ckpt = cfg.callbacks.model_checkpoint  # runs from before the top-level `monitor`
        return {"metric": str(ckpt.monitor), "mode": str(ckpt.mode)}
    except Exception:  # no readable config: the caller leaves the row as it is
        return None


def saved_config(path: Path) -> dict | None:
    """Model and data config from the run's .hydra files (for runs whose metrics.json lacks them)."""
    from omegaconf import OmegaConf

    import voc_dl  # noqa: F401  (resolvers)

    try:
        hydra_cfg = OmegaConf.load(path / ".hydra" / "hydra.yaml").hydra
        text = (path / ".hydra" / "config.yaml").read_text()
        text = text.replace("${hydra:runtime.cwd}", str(hydra_cfg.runtime.cwd)).replace("${cwd:}",
                                                                                      str(hydra_cfg.runtime.cwd))
        text = text.replace("${hydra:runtime.output_dir}", str(path))
        cfg = OmegaConf.create(text)
        return {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data")}
    except Exception:  # an unreadable config leaves the row without model details, never breaks the report
        return None


def collect(root: str | Path) -> list[Run]:
    """Every run folder below root: those with metrics.json and those Hydra started that wrote none."""
    root = Path(root)
    dirs = {p.parent for p in root.rglob(METRICS)} | {p.parent for p in root.rglob(".hydra")}
    return sorted((read_run(d) for d in dirs), key=lambda r: str(r.path))
