"""Scoring a pool far larger than memory should use: 1,000,000 x 2,048 float16 (4.1 GB).

    .venv/bin/python benchmarks/stream_scoring.py [--rows 1000000] [--dir /tmp]

Writes a synthetic cache in the toolkit's format (chunk by chunk), then scores it with
a linear probe and a running top-k, reading 65,536 rows at a time. Prints the file size,
the peak RSS of the scoring, and their ratio, and checks the top-k against a direct
computation on a subsample.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from toolkit.features.cache import seal_content
from toolkit.features.probe import LinearProbe, score_cache_streaming


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_cache(path: Path, rows: int, dim: int, chunk: int = 8192) -> None:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.attrs["fingerprint"] = json.dumps({"model": "synthetic", "weights": "random:0"})
        f.attrs["complete"] = True
        f.create_dataset("ids", data=np.arange(rows, dtype=np.int64))
        emb = f.create_dataset("embeddings", shape=(rows, dim), dtype="float16", chunks=(4096, dim))
        for lo in range(0, rows, chunk):
            emb[lo:lo + chunk] = rng.normal(size=(min(chunk, rows - lo), dim)).astype(np.float16)
        g = f.create_group("attributes")
        g.create_dataset("y", data=np.zeros(rows, dtype=np.int64))
        g.attrs.update(columns=["y"], label_column="y", spurious_column="", class_names=["a", "b"])
        seal_content(f)


def score_child(path: str, dim: int) -> None:
    """Runs in its own process, so its peak RSS is the scoring's alone."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    probe = LinearProbe().fit(torch.randn(64, dim), torch.from_numpy(rng.integers(0, 2, 64)), 2)
    before = rss_mb()
    t0 = time.perf_counter()
    ids, scores = score_cache_streaming(path, probe, "least_confidence", 100, mean=np.zeros(dim, np.float32),
                                        std=np.ones(dim, np.float32))
    secs = time.perf_counter() - t0
    peak = rss_mb()
    with h5py.File(path) as f:  # check: the streamed top-k equals a direct computation on its rows
        x = torch.from_numpy(f["embeddings"][np.sort(ids)].astype(np.float32))
    direct = 1 - torch.softmax(probe.decision_function(x), 1).max(1).values.numpy()
    ok = bool(np.allclose(np.sort(direct)[::-1], scores, atol=1e-6))
    print(json.dumps({"secs": secs, "peak": peak, "before": before, "ok": ok}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--score", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.score:
        score_child(args.score, args.dim)
        return
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "big.h5"
        t0 = time.perf_counter()
        write_cache(path, args.rows, args.dim)
        size_mb = path.stat().st_size / 2**20
        print(f"wrote {args.rows} x {args.dim} float16: {size_mb:.0f} MB in {time.perf_counter() - t0:.0f}s")
        out = subprocess.run([sys.executable, __file__, "--score", str(path), "--dim", str(args.dim)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"scored in {r['secs']:.1f}s ({args.rows / r['secs']:,.0f} rows/s)")
        print(f"scoring process: peak RSS {r['peak']:.0f} MB, of which {r['before']:.0f} MB before scoring "
              f"(imports, probe); file / peak RSS = {size_mb / r['peak']:.1f}x")
        print(f"top-100 scores match a direct computation: {r['ok']}")


if __name__ == "__main__":
    main()
