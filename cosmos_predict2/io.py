"""The one safe loader, the one atomic writer and the one state-dict mismatch reporter.

- `safe_load(path)`: `torch.load(weights_only=True, mmap=True)` on the CPU. A pickle that would run code is
  refused; every error names the file and says what to do.
- `atomic_write(path, write)`: write to a hidden temporary name in the same folder, fsync, rename, fsync the
  folder. A kill at any moment leaves either the old file or the new one, never half of one. Temporary files
  are named `.NAME.tmp-PID` so a later run can recognise (and remove) what a killed save left behind
  (`remove_temporary_files(folder)`).
- `check_keys(expected, given, source)`: missing, unexpected and wrongly shaped keys in one message.
- `file_sha256(path)` (memoised within a process) and `cached_file_sha256(path)` (also remembered across runs in
  `$XDG_CACHE_HOME/cosmos_predict2/sha256.json`, keyed by absolute path, size and mtime).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch


class CheckpointFileError(RuntimeError):
    """A checkpoint or weights file that is missing, unsafe, truncated or not what it should be."""


class StateDictMismatchError(CheckpointFileError):
    """A state dict whose keys or shapes do not fit the module it is loaded into."""


def safe_load(path: str | os.PathLike, what: str = "checkpoint", mmap: bool = True) -> Any:
    """Load a torch file without running pickled code. Memory-mapped where the file allows it, so a 28 GB
    checkpoint is paged in as tensors are used instead of read whole."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointFileError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointFileError(f"{what} {path} is empty (0 bytes): an interrupted copy or save; "
                                  "copy it again or delete it")  # fmt: skip
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise CheckpointFileError(
            f"{path} cannot be loaded safely (weights_only=True refused it: {str(e).splitlines()[0]}). "
            "Only plain tensor dicts are accepted; re-save the file as a dict of tensors."
        ) from e
    except RuntimeError as e:
        if mmap and "mmap" in str(e):  # legacy (non-zip) torch files cannot be memory-mapped
            return safe_load(path, what, mmap=False)
        raise CheckpointFileError(f"{what} {path} cannot be read ({_first_line(e)}): the file is truncated or "
                                  "corrupt; copy it again or delete it") from e  # fmt: skip
    except (EOFError, OSError, zipfile.BadZipFile) as e:
        raise CheckpointFileError(f"{what} {path} cannot be read ({type(e).__name__}: {_first_line(e)}): the file "
                                  "is truncated or corrupt; copy it again or delete it") from e  # fmt: skip


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def is_temporary_name(name: str) -> bool:
    return name.startswith(".") and ".tmp-" in name


# `temporary_name`'s pattern exactly: a dot, the final name, ".tmp-", the writer's pid.
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>[0-9]+)")


def remove_temporary_files(folder: str | os.PathLike) -> list[Path]:
    """Delete what killed atomic writes left in `folder` (not its sub-folders): files named exactly like
    `temporary_name` makes them, except this process's own. The caller must know that no other process is writing
    there (training holds the job folder's lock)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        match = _TEMPORARY.fullmatch(path.name)
        if match and int(match["pid"]) != os.getpid() and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(file)` on a temporary file, then make it `path` in one rename (see the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:  # make the rename itself durable
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, computed once per process for each (path, size, mtime): a 28 GB checkpoint is not hashed
    again every time it is checked, and a file rewritten in place is hashed again."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


SHA256_CACHE_MAX_ENTRIES = 1000


def sha256_cache_file() -> Path:
    """`$XDG_CACHE_HOME/cosmos_predict2/sha256.json` (default `~/.cache/...`): sha256 of large files by (absolute
    path, size, mtime), so that checking a 28 GB base checkpoint costs one hash per machine, not one per run."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "cosmos_predict2" / "sha256.json"


def _read_sha256_cache(cache: Path) -> dict:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, unreadable or corrupt: start again (it is only a cache)
        return {}
    return data if isinstance(data, dict) else {}


def cached_file_sha256(path: str | os.PathLike) -> str:
    """`file_sha256(path)`, also remembered across runs in `sha256_cache_file()` under (absolute path, size,
    mtime_ns): a file rewritten or replaced (other size or mtime) is hashed again. The cache is best effort: a
    cache that cannot be read or written only costs the hash."""
    resolved = Path(path).resolve()
    st = resolved.stat()
    key, stamp = str(resolved), {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    cache_file = sha256_cache_file()
    entry = _read_sha256_cache(cache_file).get(key)
    if isinstance(entry, dict) and {k: entry.get(k) for k in stamp} == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = file_sha256(resolved)
    cache = _read_sha256_cache(cache_file)  # read again: another process may have added entries meanwhile
    cache.pop(key, None)
    cache[key] = {**stamp, "sha256": digest}
    if len(cache) > SHA256_CACHE_MAX_ENTRIES:  # keep the newest entries (dicts keep insertion order)
        cache = dict(list(cache.items())[-SHA256_CACHE_MAX_ENTRIES:])
    try:
        atomic_write_text(cache_file, json.dumps(cache, indent=1))
    except OSError:
        pass
    return digest


def _describe(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def mismatch_report(expected: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """Lines naming missing, unexpected and wrongly shaped keys ([] when `given` fits). Values are tensors or
    shapes."""
    shape = lambda v: tuple(v.shape) if hasattr(v, "shape") else tuple(v)  # noqa: E731
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong_shape = sorted(f"{k} (file {shape(given[k])}, model {shape(expected[k])})"
                         for k in set(expected) & set(given) if shape(given[k]) != shape(expected[k]))  # fmt: skip
    lines = []
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_describe(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_describe(unexpected)}")
    if wrong_shape:
        lines.append(f"  wrong shapes ({len(wrong_shape)}): {_describe(wrong_shape)}")
    return lines


def check_keys(expected: Mapping[str, Any], given: Mapping[str, Any], source: str, what: str = "the network",
               hint: str = "", error: type[Exception] = StateDictMismatchError, sep: str = "\n") -> None:
    """Raise `error` listing every missing, unexpected and wrongly shaped key of `given` against `expected`
    (one line per kind; `sep=" "` for a one-line message)."""
    lines = mismatch_report(expected, given)
    if lines:
        parts = [f"{source} does not match {what}:", *lines, *([hint] if hint else [])]
        raise error(sep.join(p.strip() if sep != "\n" else p for p in parts))


__all__ = [
    "CheckpointFileError",
    "StateDictMismatchError",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_text",
    "cached_file_sha256",
    "check_keys",
    "file_sha256",
    "is_temporary_name",
    "mismatch_report",
    "remove_temporary_files",
    "safe_load",
    "sha256_cache_file",
    "temporary_name",
]
