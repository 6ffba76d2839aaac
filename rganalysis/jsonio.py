"""Writing JSON results atomically (never a half-written file)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .store import AtomicOutput


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON to ``path`` via a temporary file (overwrites)."""
    with AtomicOutput(path, force=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    return Path(path)
