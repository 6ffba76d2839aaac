"""Writing outputs atomically: a temporary file beside the target, renamed over it on success."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rganalysis.errors import OutputExistsError

__all__ = ["AtomicOutput", "write_json"]


class AtomicOutput:
    """Context manager that yields a temporary path beside ``path`` and renames it over ``path`` on
    success; on any error the temporary file is removed and ``path`` is left untouched."""

    def __init__(self, path: str | os.PathLike, force: bool = False):
        self.path = Path(path)
        self.force = force
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        if self.path.exists() and not self.force:
            raise OutputExistsError(f"{self.path} exists; pass force=True (--force) to overwrite it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON to ``path`` via a temporary file (overwrites)."""
    with AtomicOutput(path, force=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    return Path(path)
