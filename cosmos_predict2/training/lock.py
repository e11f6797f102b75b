"""One training run per job folder: an exclusive `flock` on JOB/job.lock, held open by the run's main rank.

    lock = JobLock(job_dir).acquire()   # raises JobLockedError naming the other run's pid, host and command
    ...
    lock.release()

flock(2) locks belong to the open file: the kernel drops the lock when the process dies, kill -9 included, so a
crashed run never leaves a stale lock behind and nothing has to be cleaned by hand. The file itself stays; while
locked it holds the holder's pid, host, start time and command (JSON), which is what a refused run reports.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = "job.lock"


class JobLockedError(RuntimeError):
    """Another training run holds the job folder."""


def command_line(argv: list[str] | None = None, replace: dict[str, str] | None = None) -> str:
    """This run's command as the user would type it again, with `replace`'s `key=value` overrides set (replaced
    where given, appended after `--` otherwise). Under torchrun the workers see only WORLD_SIZE/LOCAL_WORLD_SIZE,
    not the launcher's rendezvous flags: multi-node jobs get `--nnodes=N` and must add their own rendezvous flags."""
    argv = list(sys.argv if argv is None else argv)
    prog, args = argv[0] if argv else "", argv[1:]
    if Path(prog).with_suffix("").parts[-2:] == ("scripts", "train"):
        prog = "-m scripts.train"  # `python -m scripts.train` sets argv[0] to the file's path
    else:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        prog = f"-m {spec.name.removesuffix('.__main__')}" if spec is not None else shlex.quote(prog)
    for key, value in (replace or {}).items():
        kept = [a for a in args if a.split("=", 1)[0].lstrip("+") != key]
        args = kept + (["--"] if "--" not in kept else []) + [f"{key}={value}"]
    world, local = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    launcher = "python"
    if world > 1:
        nnodes = world // max(local, 1)
        launcher = f"torchrun --nproc_per_node={local}" + (f" --nnodes={nnodes}" if nnodes > 1 else "")
    return f"{launcher} {prog} {shlex.join(args)}".strip()


class JobLock:
    """The lock on one job folder (see the module docstring). Only the main rank takes it."""

    def __init__(self, job_dir: str | os.PathLike) -> None:
        self.job_dir = Path(job_dir)
        self.path = self.job_dir / LOCK_NAME
        self._file = None

    def acquire(self) -> JobLock:
        self.job_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")  # "a+": never truncates another run's record before locking
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(f)
            f.close()
            raise JobLockedError(self._refusal(holder)) from None
        f.seek(0)
        f.truncate()
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": command_line()}  # fmt: skip
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
        self._file = f
        return self

    def release(self) -> None:
        if self._file is None:
            return
        self._file.seek(0)
        self._file.truncate()  # before unlocking: a run that locks next never finds our record in its file
        fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def _refusal(self, holder: dict) -> str:
        pid = holder.get("pid", "unknown")
        who = f"pid {pid} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
        return (f"{self.job_dir} is in use by another training run ({who}: {holder.get('command', '?')}). Two runs "
                f"in one job folder would overwrite each other's checkpoints: wait for it to finish or stop it "
                f"(kill {pid}), or give this run another job.name. The lock ({self.path}) is released when that "
                "process exits, even if it is killed.")  # fmt: skip


def _read_holder(f) -> dict:
    """The holder's record. It writes it just after locking: retry briefly instead of reporting an empty file."""
    for _ in range(20):
        f.seek(0)
        text = f.read().strip()
        if text:
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                pass
        time.sleep(0.05)
    return {}


__all__ = ["JobLock", "JobLockedError", "LOCK_NAME", "command_line"]
