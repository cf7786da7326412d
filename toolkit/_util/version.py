"""The toolkit's version and the commit it runs from, for record and cache headers."""
from __future__ import annotations

import subprocess
from pathlib import Path

__version__ = "0.1.0"


def git_commit(path: str | Path = ".") -> str:
    """The git commit checked out at `path`, or "unknown" outside a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
