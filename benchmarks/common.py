"""What benchmarks share: composing a training config as the CLI would, and saving results (JSON and
markdown under outputs/bench, the table printed)."""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_train(experiment: str, run_dir: str, overrides: list[str]):
    """conf/train.yaml composed with the experiment, plus what @hydra.main would have filled in."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train.yaml", return_hydra_config=True, overrides=[f"experiment={experiment}", *overrides])
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = run_dir
        cfg.hydra.runtime.cwd = str(CONF.parent)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


def save(out: Path, name: str, meta: dict, rows: list[dict], lines: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
