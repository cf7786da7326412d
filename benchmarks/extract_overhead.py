"""Feature-cache overhead: extraction into HDF5 vs the bare forward passes it wraps.

    .venv/bin/python benchmarks/extract_overhead.py [--sizes 2000 8000]

For each pool size, in a fresh subprocess (so peak RSS is its own): time the bare
embedding loop (no file), then `extract_features` (HDF5 writes, fingerprinting,
chunk bookkeeping) on the same data and model. Prints the overhead ratio and peak RSS;
RSS should not grow with the dataset beyond the dataset itself (held in memory by the
toy loader; reported separately).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def child(n: int, root: str) -> None:
    import numpy as np
    import torch

    from toolkit.data import create_dataset
    from toolkit.features.cache import _embed, extract_features
    from toolkit.models import create_model

    torch.set_num_threads(1)
    params = {"n_train": n, "cache_dir": f"{root}/data"}
    ds = create_dataset("toyworld", "train", **params)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.manual_seed(0)
    model = create_model("toy_resnet", weights="random", num_classes=2).eval()
    bare, full = [], []
    for rep in range(3):  # alternate and keep the best of each: the machine's noise is larger than the effect
        t0 = time.perf_counter()
        for lo in range(0, n, 1024):
            _embed(model, ds, np.arange(lo, min(lo + 1024, n)), torch.device("cpu"), 256)
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        extract_features("toy_resnet", "toyworld", "train", weights="random", dataset_params=params,
                         root=f"{root}/feat{rep}", log=None)
        full.append(time.perf_counter() - t0)
    bare, full = min(bare), min(full)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": n, "bare_s": bare, "extract_s": full, "rss_after_data_mb": rss_data, "peak_rss_mb": peak}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000])
    ap.add_argument("--child", type=int, default=None)
    ap.add_argument("--root", default=None)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.root)
        return
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as root:
            out = subprocess.run([sys.executable, __file__, "--child", str(n), "--root", root],
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        # extraction re-creates the model and re-reads the cached dataset: both counted as overhead
        overhead = (r["extract_s"] - r["bare_s"]) / r["bare_s"]
        print(f"n={n}: bare forward {r['bare_s']:.2f}s, extract_features {r['extract_s']:.2f}s, "
              f"overhead {overhead:+.1%}; peak RSS {r['peak_rss_mb']:.0f} MB "
              f"(of which the in-memory toy dataset + model: {r['rss_after_data_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
