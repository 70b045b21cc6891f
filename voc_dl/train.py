"""Train one experiment: `python -m voc_dl.train experiment=autoencoder [overrides]` (add -m to sweep).

Each run folder ends with `metrics.json` (status, final validation metrics of the best checkpoint,
epochs, wall time, hardware, overrides), `history.csv`, checkpoints and TensorBoard events.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities.exceptions import SIGTERMException

import voc_dl  # noqa: F401  (registers the config resolvers)
from voc_dl import cli, run_folders
from voc_dl.atomic import atomic_write_text
from voc_dl.callbacks import AtomicCheckpointIO, scalar_metrics
from voc_dl.config import job_config, validate
from voc_dl.hardware import hardware, resolve_precision
from voc_dl.hparams import log_final, run_hparams
from voc_dl.instantiate import instantiate
from voc_dl.provenance import provenance, tags
from voc_dl.run_files import HISTORY, METRICS, last_ckpt

log = logging.getLogger("voc_dl")

# A job's last log line; voc_dl.demo reads them to show each job's result as it ends.
DONE_LINE = "done: %s=%.4f%s (best epoch %s of %s) | checkpoint %s | run folder %s"
FAILED_LINE = f"job failed (recorded in %s/{METRICS}): %s"


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "last":
        last = last_ckpt(run_dir)
        if not last.is_file():
            raise FileNotFoundError(
                f"ckpt_path=last: no {last}. Fix: resume in the interrupted run's folder with "
                f"hydra.run.dir=<that folder> ckpt_path=last (see docs/reliability.md, 'Resume')")
        return str(last)
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such file. Fix: give a checkpoint file, or "
                                "ckpt_path=last to resume this run folder")
    return ckpt_path


def thread_cap(cfg: DictConfig) -> int | None:
    """Threads per job: cfg.threads, or cores / n_jobs when the joblib launcher runs jobs side by side."""
    if cfg.get("threads"):
        return int(cfg.threads)
    try:
        launcher = HydraConfig.get().launcher
    except ValueError:
        return None
    if "joblib" in str(launcher.get("_target_", "")):
        n_jobs = launcher.get("n_jobs") or 1
        n_jobs = os.cpu_count() if n_jobs < 0 else n_jobs
        return max(1, (os.cpu_count() or 1) // n_jobs)
    return None


def check_no_nested_launch(cfg: DictConfig) -> None:
    """DDP that re-executes the command line inside a local multirun would start the sweep again per rank."""
    try:
        hc = HydraConfig.get()
    except ValueError:
        return
    strategy = str(cfg.trainer.get("strategy", "auto"))
    many = (cfg.trainer.get("devices") not in (1, "1", None)) or (cfg.trainer.get("num_nodes") or 1) > 1
    local = not any(k in str(hc.launcher.get("_target_", "")) for k in ("submitit",))
    if hc.mode == RunMode.MULTIRUN and local and many and strategy.startswith("ddp") and "spawn" not in strategy:
        raise ValueError(
            f"trainer.strategy={strategy} with {cfg.trainer.devices} devices inside a local multirun: Lightning "
            "re-executes the command line per rank, which would launch nested sweeps. Fix: use "
            "hydra/launcher=slurm (one process tree per job), trainer.strategy=ddp_spawn, or run jobs one by one")


def build(cfg: DictConfig):
    """Instantiate datamodule, task, callbacks, loggers and trainer from a composed config."""
    validate(cfg)
    check_no_nested_launch(cfg)
    if (threads := thread_cap(cfg)) is not None:
        torch.set_num_threads(threads)
    pl.seed_everything(cfg.seed, workers=True)
    precision = resolve_precision(cfg.trainer.precision, cfg.fp32, cfg.trainer.accelerator)
    datamodule = instantiate(cfg.data, _convert_="all")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True) | {"monitor": OmegaConf.to_container(cfg.monitor)}
    if cfg.fp32:
        model_cfg["channels_last"] = False
    # not recursive: the task receives its network and optimiser as config, builds them and saves that
    # config in every checkpoint (Lightning's hyperparameters), which is all a checkpoint needs to load
    model = instantiate(model_cfg, _recursive_=False, _convert_="all")
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer = hydra.utils.instantiate(cfg.trainer, precision=precision, callbacks=callbacks,
                                      logger=loggers or False, plugins=[AtomicCheckpointIO()])
    return datamodule, model, trainer


def fit(datamodule, model, trainer, ckpt_path: str | None) -> dict:
    """Train, then score the best checkpoint (by `monitor`) on the whole validation split, as the
    baselines and `voc_dl.eval` score it, and once on the test split (data.test_split), if there is one."""
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    last = scalar_metrics(trainer.callback_metrics)
    monitored = [c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)]
    best = monitored[0].best_model_path if monitored and monitored[0].best_model_path else None
    if not trainer.fast_dev_run:
        trainer.limit_val_batches = 1.0
    val = trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)[0]
    test = {}
    if datamodule.test_split:
        if not trainer.fast_dev_run:
            trainer.limit_test_batches = 1.0
        test = trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)[0]
    if not datamodule.info:  # ddp_spawn set the data up in its child processes only
        datamodule.setup("fit")
    return {"best_ckpt": best, "best_epoch": torch.load(best, map_location="cpu", weights_only=False)["epoch"]
            if best else None, "val": scalar_metrics(val), **({"test": scalar_metrics(test)} if test else {}),
            "last": last, "val_scope": "first batch" if trainer.fast_dev_run else "whole split"}


def record(cfg: DictConfig, result: dict, trainer, fitted: dict, data_info: dict, started: float) -> dict:
    """metrics.json and the TensorBoard HParams session of a finished run."""
    run_dir = Path(cfg.paths.run_dir)
    history = run_dir / HISTORY
    # ddp_spawn trains in child processes: the parent's epoch counter stays 0, history.csv does not
    epochs = max(trainer.current_epoch, len(history.read_text().splitlines()) - 1 if history.exists() else 0)
    result.update(status="ok", epochs=epochs, **fitted, data=data_info, wall_time_s=round(time.time() - started, 1))
    # the HParams tab compares runs, of one sweep or of every section, by their final metrics
    log_final(trainer.loggers, run_hparams(cfg, result["model"], result["overrides"], result["provenance"],
                                             result["hardware"].get("device")),
              {f"final/{k}": v for k, v in (result["val"] | result.get("test", {})).items()}, trainer.global_step,
              started)
    atomic_write_text(run_dir / METRICS, json.dumps(result, indent=2))
    key = cfg.monitor.metric
    test_key = "test/" + key.removeprefix("val/")
    tested = f" ({test_key}={result['test'][test_key]:.4f})" if test_key in result.get("test", {}) else ""
    log.info(DONE_LINE, key, result["val"].get(key, float("nan")), tested, result["best_epoch"], epochs,
             result["best_ckpt"], run_dir)
    return result


def train(cfg: DictConfig) -> dict:
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    result = {"status": "running", "task_name": cfg.task_name, "overrides": cli.overrides(),
              "seed": cfg.seed, "tags": tags(cfg), "monitor": OmegaConf.to_container(cfg.monitor),
              "run_dir": str(run_dir), "hardware": hardware(), "provenance": provenance(),
              "job_config": job_config(cfg)}  # what resume=true compares (Hydra rewrites .hydra/ every launch)
    atomic_write_text(run_dir / METRICS, json.dumps(result, indent=2))
    try:
        datamodule, model, trainer = build(cfg)
        result["hardware"] = hardware()  # after build: the thread cap is set there
        ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)
        n_params = model.trainable_parameters()
        log.info("%s: %s trainable parameters (%s)", type(model.net).__name__, f"{n_params:,}",
                 ", ".join(f"{k}={v}" for k, v in cfg.model.items() if k in ("code_size", "loss")) or "-")
        result.update(model=type(model.net).__name__, trainable_params=n_params,
                      config={"model": {"_target_": cfg.model._target_, **model.hparams},
                              "data": {"_target_": cfg.data._target_, **datamodule.hparams}},
                      precision=str(trainer.precision), max_epochs=cfg.trainer.max_epochs)
        fitted = fit(datamodule, model, trainer, ckpt_path)
        return record(cfg, result, trainer, fitted, datamodule.info, started)
    except BaseException as e:
        # Ctrl-C or a kill (Lightning turns SIGTERM into SIGTERMException, and Ctrl-C during fit into sys.exit(1)
        # raised while handling the KeyboardInterrupt) stops a healthy run: interrupted, resumable with
        # ckpt_path=last; anything else is a failure of the run itself.
        stopped = isinstance(e, KeyboardInterrupt | SIGTERMException) or (
            isinstance(e, SystemExit) and isinstance(e.__context__, KeyboardInterrupt))
        result.update(status="interrupted" if stopped else "failed",
                      error=f"{type(e).__name__}: {e}" + (" (resume: ckpt_path=last)" if stopped else ""),
                      traceback=traceback.format_exc(),
                      wall_time_s=round(time.time() - started, 1))
        atomic_write_text(run_dir / METRICS, json.dumps(result, indent=2))
        raise


@hydra.main(version_base="1.3", config_path="../conf", config_name="train.yaml")
def app(cfg: DictConfig) -> float | None:
    cli.quiet_third_parties()  # again in a launcher's worker process (joblib), which cli.run did not start
    run_dir = Path(cfg.paths.run_dir)
    with cli.one_line_errors():
        try:
            with run_folders.in_use(run_dir):  # no second process in this folder while this one trains
                step = run_folders.plan(cfg, run_dir)
                if step.action == "skip":
                    return step.returned(cfg.monitor.metric)
                if step.ckpt_path != cfg.get("ckpt_path"):
                    with open_dict(cfg):
                        cfg.ckpt_path = step.ckpt_path
                if cfg.get("resume"):  # the DDP processes Lightning starts from this command follow this decision
                    os.environ[run_folders.RESUMED_FROM] = step.ckpt_path or ""
                result = train(cfg)
        except Exception as e:
            # In a sweep one failing job must not take the others down: record it and go on.
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                if isinstance(e, run_folders.RunFolderError):  # refused before it wrote anything
                    log.error("job not run: %s", e)
                else:
                    log.error(FAILED_LINE, run_dir, e)
                return None
            raise
    return result["val"].get(cfg.monitor.metric)  # what a sweeper optimises, in the direction of monitor.mode


def main() -> None:
    cli.run(app)


if __name__ == "__main__":
    main()
