"""Writing outputs safely: never over an input, never over an existing file without ``force``, always
atomically (a recognisable temporary file beside the target, renamed over it on success), with the
permissions a plain ``open`` would give (the umask).

Every command checks its outputs with :func:`guard_outputs` before it starts, and writes each one
through :class:`AtomicOutput` (stores, JSON, HTML, PDF).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rganalysis.errors import (
    ConcurrentWriteError,
    DuplicateOutputError,
    OutputExistsError,
    OutputIsInputError,
    StoreInUseError,
)

__all__ = [
    "AtomicOutput",
    "TEMP_MARK",
    "guard_outputs",
    "is_temp_file",
    "open_for_update",
    "remove_stale_temp_files",
    "same_file",
    "write_json",
]

#: what every temporary file of an output carries in its name: ``.NAME.rganalysis-partial-PID-TOKEN``
TEMP_MARK = "rganalysis-partial"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\." + TEMP_MARK + r"-(?P<pid>\d+)-[0-9a-f]+$")


def is_temp_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is named like the temporary file of an rganalysis write."""
    return _TEMP_RE.match(Path(path).name) is not None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of earlier writes of ``path`` whose writer process is gone (e.g.
    killed with ``kill -9``); the files of a writer still running are left alone.  Returns those removed."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for p in path.parent.glob(f".{glob_escape(path.name)}.{TEMP_MARK}-*"):
        m = _TEMP_RE.match(p.name)
        if m is None or m["name"] != path.name or _pid_alive(int(m["pid"])):
            continue
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` are one file: the same path after symlinks, or the same inode (hard links)."""
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # (not thread-safe: only where /proc is missing)
    os.umask(mask)
    return mask


def guard_outputs(
    outputs: Mapping[str, str | os.PathLike | None],
    inputs: Iterable[str | os.PathLike],
    *,
    force: bool = False,
    folders: Iterable[str] = (),
) -> None:
    """Refuse, before any work, outputs that would destroy an input or an existing file.

    Parameters
    ----------
    outputs : option name (e.g. ``"-o"``, ``"--json"``) -> path, or None when not given
    inputs : every file or folder the command reads
    force : allow replacing an existing output (never an input)
    folders : the option names of ``outputs`` that are folders (an existing non-empty folder needs ``force``)

    Raises
    ------
    OutputIsInputError
        An output resolves to an input (same path after symlinks, or the same inode), with or without ``force``.
    DuplicateOutputError
        Two outputs resolve to the same file.
    OutputExistsError
        An output exists and ``force`` is not given (or it is a folder where a file is written).
    """
    ins = [Path(p) for p in inputs]
    folder_opts = set(folders)
    seen: dict[str, Path] = {}
    for opt, out in outputs.items():
        if out is None:
            continue
        out = Path(out)
        for i in ins:
            if same_file(out, i):
                raise OutputIsInputError(
                    f"{opt} {out} is an input of this command ({i}); outputs never replace inputs"
                )
        for other, p in seen.items():
            if same_file(out, p):
                raise DuplicateOutputError(
                    f"{opt} and {other} both name {out}; give each output its own file"
                )
        seen[opt] = out
        if opt in folder_opts:
            if out.exists() and not out.is_dir():
                raise OutputExistsError(f"{opt} {out} exists and is not a folder")
            if out.is_dir() and any(out.iterdir()) and not force:
                raise OutputExistsError(
                    f"{opt} {out} exists and is not empty; pass --force (force=True) to write into it"
                )
            continue
        if out.is_dir():
            raise OutputExistsError(f"{opt} {out} is a folder; give a file name")
        if out.exists() and not force:
            raise OutputExistsError(f"{out} exists; pass --force (force=True) to overwrite it")


class AtomicOutput:
    """Context manager that yields a temporary path beside ``path`` and moves it to ``path`` on success.

    * the temporary file is named ``.NAME.rganalysis-partial-PID-TOKEN`` (:data:`TEMP_MARK`); those of
      earlier writes of the same output whose process is gone are deleted first;
    * ``path`` must not exist unless ``force`` (checked on entry, and again, atomically, at the end:
      without ``force`` the file is moved in with a hard link, which fails if another writer created
      ``path`` meanwhile, :class:`~rganalysis.errors.ConcurrentWriteError`);
    * ``path`` must not be any of ``inputs`` (:class:`~rganalysis.errors.OutputIsInputError`);
    * the finished file gets the permissions ``open`` would give it (``0o666`` less the umask);
    * on any error the temporary file is removed and ``path`` is left untouched.
    """

    def __init__(
        self, path: str | os.PathLike, force: bool = False, inputs: Iterable[str | os.PathLike] = ()
    ):
        self.path = Path(path)
        self.force = force
        self.inputs = list(inputs)
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        guard_outputs({"output": self.path}, self.inputs, force=self.force)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.path)
        while True:
            tmp = self.path.parent / f".{self.path.name}.{TEMP_MARK}-{os.getpid()}-{os.urandom(4).hex()}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # pragma: no cover - 32 random bits collided
                continue
            os.close(fd)
            break
        self.tmp = tmp
        return tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        try:
            os.chmod(self.tmp, 0o666 & ~_umask())
            if self.force:
                os.replace(self.tmp, self.path)
                return
            try:
                os.link(self.tmp, self.path)  # exclusive: fails if the target appeared meanwhile
            except FileExistsError:
                raise ConcurrentWriteError(
                    f"{self.path} was created by another writer while this one ran; this result was "
                    "discarded (pass --force, force=True, to replace it)"
                ) from None
            except OSError:  # a file system without hard links: check, then rename
                if self.path.exists():
                    raise ConcurrentWriteError(
                        f"{self.path} was created by another writer while this one ran; this result was "
                        "discarded (pass --force, force=True, to replace it)"
                    ) from None
                os.rename(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)


def write_json(
    obj: Any, path: str | os.PathLike, *, force: bool = True, inputs: Iterable[str | os.PathLike] = ()
) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (:class:`AtomicOutput`; replaces an existing
    file unless ``force=False``)."""
    with AtomicOutput(path, force=force, inputs=inputs) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    return Path(path)


def open_for_update(path: str | os.PathLike) -> Any:
    """``h5py.File(path, "r+")`` for writing a group into an existing store (``/koopman`` modes,
    ``/response``); :class:`~rganalysis.errors.StoreInUseError` when this process has it open read-only."""
    import h5py

    try:
        return h5py.File(path, "r+")
    except OSError as e:
        if "already open" in str(e):
            raise StoreInUseError(
                f"{path} is open read-only elsewhere in this process (close the ParameterSet first): {e}"
            ) from None
        raise
