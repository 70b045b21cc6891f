from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import voc_dl  # noqa: F401  (resolvers)
from voc_dl.data.synthetic import make_synthetic_voc

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED_VOC = ROOT.parent / "shared" / "voc"
# pytest-xdist workers share the cores: each takes its part (and so do the commands it starts), so the
# suite does not oversubscribe them
# A task's optimiser as the config a task takes (conf/optim/)
ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-3}
THREADS = max(1, min(2, os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
torch.set_num_threads(THREADS)
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))


def assert_fp32_close(actual: torch.Tensor, expected: torch.Tensor, terms: int) -> None:
    """Equal up to fp32 summation order: kernels for other CPUs (AVX2, AVX-512, AMX) block and order a sum
    of `terms` products differently, and such reorderings differ by about sqrt(terms) roundings of the
    largest value. Four of those, relative to the tensor's own scale, and nothing looser."""
    scale = expected.abs().max().item()
    atol = 4 * torch.finfo(torch.float32).eps * terms ** 0.5 * scale
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic VOCdevkit tree shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("voc")
    make_synthetic_voc(root, "2009", n_images=48, seed=3)
    return root


def composer(tmp_path: Path, synthetic_root: Path):
    """Compose conf/train.yaml (or another entry config) as the CLI would, writing into tmp_path."""

    def _compose(overrides=(), config_name="train.yaml"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name=config_name, return_hydra_config=True, overrides=list(overrides))
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
            cfg.hydra.runtime.cwd = str(ROOT)
            cfg.hydra.job.num = 0
            cfg.paths.output_dir = str(tmp_path / "outputs")
            if "data" in cfg:  # entry configs that read no VOC tree (predict, export) have none
                cfg.data.cache_dir = str(tmp_path / "cache")
                if cfg.data.get("synthetic") and not cfg.data.root:  # the embedded data: the shared test tree
                    cfg.data.root = str(synthetic_root)
        HydraConfig().set_config(cfg)
        return cfg

    return _compose


@pytest.fixture
def compose_cfg(tmp_path, synthetic_root):
    yield composer(tmp_path, synthetic_root)
    GlobalHydra.instance().clear()


# The longest tests go first: xdist hands tests out in collection order, and one that starts last on one worker
# while the other is idle sets the suite's wall time (the README's commands take over 3 minutes on 2 cores).
LONGEST_FIRST = ("tests/test_readme.py::test_readme_commands_run_as_written",
                 "tests/test_data_roots.py::test_every_entry_point_leaves_the_users_tree_unchanged")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.nodeid not in LONGEST_FIRST)  # stable: the rest keep their order
