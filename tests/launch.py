"""`python -m voc_dl.<entry point> ...` (and voc-dl's scripts) for the tests: a process of its own, without
the interpreter start.

A fresh interpreter spends ~8 s of CPU importing torch, Lightning and torchmetrics before it reads its command
line, and the tests start dozens of commands. Here each one is forked from a server process that imported them
once (multiprocessing's forkserver, which has run no torch op and so holds no thread pool): its own pid, signals,
working directory, environment, `sys.argv`, stdin/stdout/stderr and exit status, running the module as `__main__`
as `python -m` does. What the server's imports of all entry points printed (warnings) opens every child's stderr.
Other commands, commands whose environment changes what an interpreter reads at start (STARTUP_ENV), and all of
them when VOC_DL_TEST_FRESH=1, start a real interpreter; tests whose promise is about a fresh interpreter itself
(test_cli's one-line errors, loading without Hydra) call subprocess directly.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["tests.launch_preload"])


# read when an interpreter or a library starts: a command given other values needs an interpreter of its own
STARTUP_ENV = ("PYTHONPATH", "PYTHONHASHSEED", "PYTHONWARNINGS", "PYTHONSAFEPATH", "OMP_NUM_THREADS",
               "MKL_NUM_THREADS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MPLBACKEND", "MPLCONFIGDIR")


def _forkable(cmd: list[str], cwd, env) -> tuple[str, list[str]] | None:
    """(what to run, its arguments) for `python -m voc_dl.<module> ...` or `python <voc-dl's script>.py ...` of
    this environment, or None. What to run is a module name, or the path of a script."""
    if len(cmd) < 2 or os.environ.get("VOC_DL_TEST_FRESH") == "1":
        return None
    if env is not None and any(env.get(key) != os.environ.get(key) for key in STARTUP_ENV):
        return None
    python = Path(cwd or os.getcwd(), cmd[0])  # `.venv/bin/python` is relative to the command's folder
    if python.name not in ("python", "python3", Path(sys.executable).name) or not python.exists():
        return None
    # the same environment: the venv's bin folder (its python links to the base interpreter)
    if python.parent.resolve() != Path(sys.executable).parent.resolve():
        return None
    if cmd[1] == "-m" and len(cmd) > 2 and cmd[2].split(".")[0] == "voc_dl":
        return cmd[2], cmd[3:]
    script = Path(cwd or os.getcwd(), cmd[1])
    if cmd[1].endswith(".py") and script.resolve().is_relative_to(ROOT) and script.is_file():
        return str(script), cmd[2:]
    return None


def _child(cmd: list[str], target: str, args: list[str], cwd: str, env: dict, stdout: str, stderr: str) -> None:
    import atexit
    import multiprocessing
    import runpy
    import signal
    import tempfile
    import threading

    from tests import launch_preload

    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, stdout, os.O_WRONLY | os.O_APPEND),
                            (2, stderr, os.O_WRONLY | os.O_APPEND)):
        new = os.open(path, flags)
        os.dup2(new, fd)
        os.close(new)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # read TMPDIR again
    multiprocessing.set_start_method(None, force=True)  # the platform's default again, not the fork server's
    script = target.endswith(".py")
    # first on the path: the working directory for `python -m`, the script's folder for a script
    sys.path[0:0] = [str(Path(target).parent) if script else os.getcwd()]
    sys.stderr.write(launch_preload.IMPORT_OUTPUT)
    sys.argv, sys.orig_argv = [target, *args], list(cmd)  # orig_argv: the command line runs record
    for name in (target, f"{target}.__main__"):  # imported by the server; `python -m` executes it afresh
        sys.modules.pop(name, None)
    code, interrupted = 0, False
    try:
        if script:
            runpy.run_path(target, run_name="__main__")
        else:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException as error:  # noqa: BLE001  (as an uncaught exception ends an interpreter)
        sys.excepthook(type(error), error, error.__traceback__)
        code, interrupted = 1, isinstance(error, KeyboardInterrupt)
    # the interpreter's own shutdown: wait for threads, run atexit, flush
    threading._shutdown()
    atexit._run_exitfuncs()
    _flush()
    if interrupted:  # as Python does after an uncaught KeyboardInterrupt: die of the signal
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


class Forked:
    """The part of subprocess.Popen the tests use, for a forked command."""

    def __init__(self, cmd: list[str], target: tuple[str, list[str]], cwd, env, stdout, stderr):
        self.args = cmd
        self._files = {}
        paths = []
        for name, stream in (("stdout", stdout), ("stderr", stderr)):
            if stream == subprocess.PIPE:
                fd, path = tempfile.mkstemp(prefix=f"voc-dl-test-{name}-")
                os.close(fd)
                self._files[name] = path
                paths.append(path)
            elif stream == subprocess.STDOUT:
                paths.append(paths[0])
            else:
                paths.append(os.devnull)
        self._process = _CTX.Process(target=_child, args=(list(cmd), *target, str(cwd or os.getcwd()),
                                                          dict(os.environ if env is None else env), *paths))
        self._process.start()
        self.pid = self._process.pid
        self.returncode = None

    def poll(self) -> int | None:
        if self.returncode is None and not self._process.is_alive():
            self._process.join()
            self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self._process.kill()

    def read(self, name: str, text: bool) -> str | bytes | None:
        path = self._files.get(name)
        if path is None:
            return None
        data = Path(path).read_bytes()
        os.unlink(path)
        return data.decode(errors="replace") if text else data


def popen(cmd: list[str], cwd=None, env=None, stdout=None, stderr=None):
    """subprocess.Popen(cmd, ...), forked when `cmd` is `python -m voc_dl.<module> ...` (there, None for stdout or
    stderr discards it)."""
    target = _forkable(cmd, cwd, env)
    if target is None:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout, stderr=stderr)
    return Forked(cmd, target, cwd, env, stdout, stderr)


def run(cmd: list[str], cwd=None, env=None, timeout: float | None = None, capture_output: bool = False,
        text: bool = False) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, ...), forked when `cmd` is `python -m voc_dl.<module> ...`."""
    if _forkable(cmd, cwd, env) is None:
        return subprocess.run(cmd, cwd=cwd, env=env, timeout=timeout, capture_output=capture_output, text=text)
    pipe = subprocess.PIPE if capture_output else None
    proc = popen(cmd, cwd=cwd, env=env, stdout=pipe, stderr=pipe)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    finally:
        out, err = proc.read("stdout", text), proc.read("stderr", text)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
