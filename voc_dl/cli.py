"""What every entry point does with its command line: Lightning-style trainer overrides, one-line errors,
and a console without third-party advertising."""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import logging
import os
import re
import sys
import uuid
import warnings
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from voc_dl.data.extra_masks import RETIRED_KEYS, retired

TRAINER_DEFAULTS = Path(__file__).resolve().parents[1] / "conf" / "trainer" / "default.yaml"
# Errors whose message is the whole story (key, value, fix); anything else keeps its traceback. voc-dl's own
# errors of other kinds (a diverged run, a failed weight download) subclass ValueError too.
USER_ERRORS = (ValueError, FileNotFoundError, MissingMandatoryValue)
EXIT_USAGE = 2
# The id of one launch of a command, shared by all its jobs (the `${launch:}` resolver, voc_dl/__init__.py).
LAUNCH_ENV = "VOC_DL_LAUNCH"


class UsageError(ValueError):
    """A command line that cannot run; the message says what to type instead."""


def fail(message: str) -> None:
    print(f"voc-dl: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)


def verbose() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


@contextlib.contextmanager
def one_line_errors():
    """Turn a user error into one line on stderr and exit status 2; HYDRA_FULL_ERROR=1 keeps the traceback."""
    try:
        yield
    except USER_ERRORS as e:
        if verbose():
            raise
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


def overrides() -> list[str]:
    """The command line's Hydra overrides, for a run's record ([] when composed outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def trainer_arguments() -> list[str]:
    import pytorch_lightning as pl

    return [p for p in inspect.signature(pl.Trainer.__init__).parameters if p != "self"]


def _key_value(arg: str) -> tuple[str, str, str] | None:
    """(prefix, key, value) of a `key=value` override; None for flags and group-less arguments."""
    m = re.match(r"^(\+{0,2}|~)([A-Za-z_][\w.@/-]*)=(.*)$", arg, re.S)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def prepare_overrides(argv: list[str]) -> list[str]:
    """Check and adapt Hydra overrides before Hydra parses them.

    - `trainer.<name>=...` is accepted for every argument of Lightning's Trainer, as Lightning users
      expect: a name that conf/trainer/default.yaml does not list is added (`++`) instead of refused.
      A name the Trainer does not take is refused in one line with the nearest valid names.
    - A value holding an unquoted '=' (every sweep folder's path) would stop Hydra's parser with
      "mismatched input '='": say how to quote it instead.
    - A data key that older commands set and that no longer exists says what replaced it.
    """
    known = set(OmegaConf.load(TRAINER_DEFAULTS))
    out = []
    for arg in argv:
        kv = _key_value(arg)
        if kv is None or arg.startswith("-"):
            out.append(arg)
            continue
        prefix, key, value = kv
        if key.startswith("data.") and key.removeprefix("data.") in RETIRED_KEYS:
            fail(retired(key.removeprefix("data.")))
        if "=" in value and not value.startswith(("'", '"')) and "(" not in value:
            fail(f"{key}={value}: the value holds '=', which Hydra reads as another override. "
                 f"Quote it: \"{prefix}{key}='{value}'\"")
        if key.startswith("trainer.") and key.count(".") == 1 and prefix == "":
            name = key.split(".", 1)[1]
            if name not in known:
                allowed = trainer_arguments()
                if name not in allowed:
                    near = difflib.get_close_matches(name, allowed, n=3, cutoff=0.5)
                    fail(f"trainer.{name} is not an argument of Lightning's Trainer"
                         + (f"; did you mean {', '.join('trainer.' + n for n in near)}?" if near else
                            f"; it takes: {', '.join(allowed)}"))
                arg = f"++{key}={value}"
        out.append(arg)
    return out


class _DropAdvertising(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


@functools.cache  # once per process
def quiet_third_parties() -> None:
    """Silence known noise at its source: Lightning's litlogger tip, torch's pytree deprecation via Lightning."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropAdvertising())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def run(app) -> None:
    """Call a @hydra.main app with checked overrides and a quiet console, as a launch of its own (`${launch:}`)."""
    os.environ[LAUNCH_ENV] = uuid.uuid4().hex
    quiet_third_parties()
    sys.argv = [sys.argv[0], *prepare_overrides(sys.argv[1:])]
    app()
