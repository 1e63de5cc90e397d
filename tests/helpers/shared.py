"""Where the shared data sets live: `../shared` beside the checkout, or beside the repository
this checkout was cloned from (a fresh clone in a temporary directory), or
`PULSESTOCK_SHARED_DIR`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _origin() -> Path | None:
    try:
        url = subprocess.run(
            ["git", "-C", str(REPO), "remote", "get-url", "origin"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(url.removeprefix("file://"))
    return path if path.is_absolute() and path.exists() else None


def shared_dir() -> Path:
    candidates = [Path(p) for p in [os.environ.get("PULSESTOCK_SHARED_DIR", "")] if p]
    candidates.append(REPO.parent / "shared")
    origin = _origin()
    if origin is not None:
        candidates.append(origin.parent / "shared")
    for candidate in candidates:
        if (candidate / "data").is_dir():
            return candidate
    return REPO.parent / "shared"  # absent: the caller's error names this path
