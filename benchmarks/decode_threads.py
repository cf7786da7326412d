"""Decoding a training batch of JPEGs: one thread (the old gather) vs the toolkit's decoder threads.

    .venv/bin/python benchmarks/decode_threads.py [--images 32] [--size 640] [--resolution 480]

Writes --images random-texture JPEGs of --size px to a temporary folder, then times
`FileImages[positions]` (BiT resize to 512 and centre crop to --resolution, as streamed
iWildCam/Camelyon17/FMoW batches are) with the decoder pool, and the same images decoded
one after another. Prints both and their ratio; checks the batches are equal.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from toolkit.data.image_files import FileImages, PathReader, bit_sizes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--resolution", type=int, default=480)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(args.images):
            base = rng.integers(0, 256, (args.size // 8, args.size // 8, 3), dtype=np.uint8)
            Image.fromarray(base).resize((args.size, args.size), Image.BICUBIC).save(Path(tmp) / f"{i}.jpg", quality=90)
            files.append(f"{i}.jpg")
        resize, resolution = bit_sizes(args.resolution)
        images = FileImages(PathReader(Path(tmp), files), len(files), resize, resolution)
        pos = np.arange(len(files))
        images[pos]  # warm the file cache and the pool
        timings = {}
        for name, fn in (("one thread", lambda: torch.stack([images[int(i)] for i in pos])),
                         ("decoder threads", lambda: images[pos])):
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                fn()
            timings[name] = (time.perf_counter() - t0) / args.repeats
            print(f"{name:16s}: {timings[name] * 1000:7.1f} ms per batch of {args.images}")
        same = torch.equal(torch.stack([images[int(i)] for i in pos]), images[pos])
        print(f"speed-up {timings['one thread'] / timings['decoder threads']:.2f}x; batches equal: {same}")


if __name__ == "__main__":
    main()
