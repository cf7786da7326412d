"""A fresh cache root for a benchmark: the toy backbone's checkpoints linked in (pretraining is
not what the benchmarks time), everything else made anew; and the arguments of those that time
a study over toy tasks."""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def study_arguments(doc: str) -> argparse.Namespace:
    """--tasks, --seeds and --workers of a benchmark that times a study over toy tasks."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    return ap.parse_args()


def fresh_cache_root(prefix: str) -> Path:
    """Make a temporary folder, point `ALTK_CACHE` at its `cache/` (spawned workers inherit it)
    and link the current cache root's `toy_backbone/` into it; returns the folder."""
    from toolkit._util.paths import cache_path

    backbones = cache_path("toy_backbone")
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["ALTK_CACHE"] = str(root / "cache")
    (root / "cache").mkdir()
    (root / "cache" / "toy_backbone").symlink_to(backbones.resolve())
    return root
