"""Images read from files: the BiT resize-and-crop, decoding on demand for pools too big
for memory, and a fingerprinted on-disk cache of decoded splits for those that fit."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

IN_MEMORY_LIMIT_BYTES = 4 * 1024 ** 3  # larger splits stream from their files


CROPS = ("centre", "random")


def bit_sizes(resolution: int, resize: int | None = None) -> tuple[int, int]:
    """(resize, crop) by BiT's rule: small images 160 -> 128, large 512 -> 480, scaled."""
    return (resize or (resolution * 160 // 128 if resolution <= 128 else resolution * 512 // 480)), resolution


def crop_layout(crop: str, resize: int, resolution: int) -> tuple[int, dict]:
    """How images are stored and cropped: (stored side, GroupedDataset size fields).

    "centre" (the toolkit's default): store the centre `resolution` crop of the `resize`
    image; training translates it. "random" (BiT and the paper's code, load.py:34-45):
    store the whole image at `resize`; training takes random `resolution` crops of it,
    evaluation and scoring resize the whole image to `resolution`."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")
    if crop == "centre":
        return resolution, {}
    return resize, {"input_size": resolution, "train_crop": resolution}


def bit_crop(image, resize: int, resolution: int) -> np.ndarray:
    """A PIL image -> (resolution, resolution, 3) uint8: resize to `resize` x `resize`, then
    take the centre `resolution` crop (BiT's evaluation transform; training adds flips and
    random translations on top, see finetune.augment)."""
    from PIL import Image

    image = image.convert("RGB").resize((resize, resize), Image.BILINEAR)
    off = (resize - resolution) // 2
    return np.asarray(image)[off:off + resolution, off:off + resolution]


def open_image(path: Path):
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


class PathReader:
    """position -> image at root / files[position]; picklable, for loader worker processes."""

    def __init__(self, root: Path, files: list[str]) -> None:
        self.root, self.files = Path(root), list(files)

    def __call__(self, i: int):
        return open_image(self.root / self.files[i])


class FileImages:
    """A split's images, decoded from files when indexed; indexing gives uint8 CHW tensors
    like an in-memory `images` tensor, so datasets and loaders need not tell them apart.

    Args:
        read: position -> PIL image (a file path lookup, or a `wilds` dataset's get_input).
        n: number of images.
        resize, resolution: the BiT transform (see `bit_crop`).
    """

    def __init__(self, read: Callable[[int], object], n: int, resize: int, resolution: int) -> None:
        self.read, self.n, self.resize, self.resolution = read, n, resize, resolution

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.n, 3, self.resolution, self.resolution)

    def _one(self, i: int) -> np.ndarray:
        return bit_crop(self.read(int(i)), self.resize, self.resolution)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)) or (torch.is_tensor(index) and index.dim() == 0):
            return torch.from_numpy(np.ascontiguousarray(self._one(int(index)).transpose(2, 0, 1)))
        positions = np.asarray(index).reshape(-1)
        batch = np.stack([self._one(i) for i in positions]) if len(positions) else \
            np.empty((0, self.resolution, self.resolution, 3), np.uint8)
        return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))


def materialise(images: FileImages, cache_path: Path | None, in_memory: bool | str = "auto"):
    """The decoded images as one uint8 tensor (read from / written to `cache_path`), or the
    lazy `images` themselves when `in_memory` is False, or "auto" and they exceed 4 GiB."""
    n_bytes = len(images) * 3 * images.resolution ** 2
    if in_memory is False or (in_memory == "auto" and n_bytes > IN_MEMORY_LIMIT_BYTES):
        return images
    if cache_path is not None and cache_path.exists():
        return torch.from_numpy(np.load(cache_path))
    decoded = images[np.arange(len(images))].numpy()
    if cache_path is not None:
        save_array_atomic(cache_path, decoded)
    return torch.from_numpy(decoded)


def save_array_atomic(path: Path, array: np.ndarray) -> None:
    """np.save under a temporary name, then rename: readers never see half a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npy")
    np.save(tmp, array)
    os.replace(tmp, path)
