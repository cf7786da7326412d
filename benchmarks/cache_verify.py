"""What checking a feature cache's chunk digests costs when it is opened (issue #23, W5).

    .venv/bin/python benchmarks/cache_verify.py [--n 5000] [--dim 2048]

Writes a float16 cache of n x dim random embeddings through the toolkit's own writer (one
chunk sha256 per 1,024 rows), then opens it 5 times with and 5 times without verification,
and prints the median seconds and the ratio, measured in the same run.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from toolkit.features.cache import chunk_digest, open_cache, seal_content


def write_cache(path: Path, n: int, dim: int, chunk_rows: int = 1024) -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, dim)).astype(np.float16)
    with h5py.File(path, "w") as f:
        f.attrs.update(fingerprint='{"model": "bench"}', complete=True, rows_done=n, chunk_rows=chunk_rows)
        f.create_dataset("ids", data=np.arange(n))
        f.create_dataset("embeddings", data=emb, chunks=(chunk_rows, dim))
        f.create_dataset("chunk_sha256", data=[chunk_digest(emb[lo:lo + chunk_rows]).encode()
                                               for lo in range(0, n, chunk_rows)], dtype="S64")
        g = f.create_group("attributes")
        g.create_dataset("y", data=np.zeros(n, dtype=np.int64))
        g.attrs.update(columns=["y"], label_column="y", spurious_column="", class_names=["a", "b"])
        seal_content(f)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=2048)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.h5"
        write_cache(path, args.n, args.dim)
        times = {True: [], False: []}
        for _ in range(5):
            for verify in (False, True):
                t0 = time.perf_counter()
                open_cache(path, verify=verify)
                times[verify].append(time.perf_counter() - t0)
    plain, checked = np.median(times[False]), np.median(times[True])
    print(f"open a {args.n} x {args.dim} float16 cache ({path.stat().st_size / 2**20 if path.exists() else args.n * args.dim * 2 / 2**20:.0f} MB):")
    print(f"  without digest check {plain * 1e3:.1f} ms, with {checked * 1e3:.1f} ms: {checked / plain:.2f}x "
          f"(+{(checked - plain) * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
