"""Images read from files: the BiT resize-and-crop, decoding on demand for pools too big
for memory, and a fingerprinted on-disk cache of decoded splits for those that fit."""
from __future__ import annotations

import numbers
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from toolkit._util.atomic import atomic_path
from toolkit.errors import DataError

IN_MEMORY_LIMIT_BYTES = 4 * 1024 ** 3  # larger splits stream from their files


CROPS = ("centre", "random")


def bit_sizes(resolution: int, resize: int | None = None) -> tuple[int, int]:
    """(resize, crop) by BiT's rule: small images 160 -> 128, large 512 -> 480, scaled."""
    for key, value in (("resolution", resolution), ("resize", resize)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise DataError(f"data.params.{key} must be a whole number of pixels >= 1, got {value!r}"
                            + (" (the side images are cropped to, e.g. 128 or 224)" if key == "resolution" else
                               " (the side images are resized to before the crop; leave it unset for BiT's rule)"))
    if resize is not None and resize < resolution:
        raise DataError(f"data.params.resize={resize} is smaller than data.params.resolution={resolution}: images "
                        f"are resized to `resize` and then cropped to `resolution`; set resize >= resolution, or "
                        f"leave it unset for BiT's rule")
    return (resize or (resolution * 160 // 128 if resolution <= 128 else resolution * 512 // 480)), resolution


def crop_layout(crop: str, resize: int, resolution: int) -> tuple[int, dict]:
    """How images are stored and cropped: (stored side, GroupedDataset size fields).

    "centre" (the toolkit's default): store the centre `resolution` crop of the `resize`
    image; training translates it. "random" (BiT and the paper's code, load.py:34-45):
    store the whole image at `resize`; training takes random `resolution` crops of it,
    evaluation and scoring resize the whole image to `resolution`."""
    if crop not in CROPS:
        raise DataError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")
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
        raise DataError(f"cannot read image {path}: {err}") from err


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
        decoded = list(_decoders().map(self._one, positions)) if len(positions) > 1 else [self._one(i) for i in positions]
        batch = np.stack(decoded) if decoded else np.empty((0, self.resolution, self.resolution, 3), np.uint8)
        return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))


_DECODERS: tuple[int, object] | None = None


def _decoders():
    """Threads that decode a batch's images in parallel (PIL releases the GIL while it
    decodes and resizes): a training step on streamed data then waits for its slowest
    image, not the sum of all. One pool per process (a forked loader worker makes its own)."""
    global _DECODERS
    if _DECODERS is None or _DECODERS[0] != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        _DECODERS = (os.getpid(), ThreadPoolExecutor(min(8, os.cpu_count() or 1), thread_name_prefix="decode"))
    return _DECODERS[1]


class DiskImages:
    """Decoded uint8 images in an .npy file, memory-mapped: indexed like an images tensor,
    read at memory speed once the pages are cached, and shared by every process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.array = np.load(self.path, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.array)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def __getitem__(self, index) -> torch.Tensor:
        if torch.is_tensor(index):
            index = index.numpy()
        return torch.from_numpy(np.ascontiguousarray(self.array[index]))

    def __getstate__(self) -> dict:  # loader workers reopen the map rather than pickling pages
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])


def decode_to_disk(images: FileImages, path: Path, chunk: int = 256) -> DiskImages:
    """Decode every image once into `path` (an .npy memory map), chunk by chunk, under a
    temporary name renamed at the end: a killed decode leaves no file a reader takes as whole."""
    if not path.exists():
        import shutil

        path.parent.mkdir(parents=True, exist_ok=True)
        needed = len(images) * 3 * images.resolution ** 2
        free = shutil.disk_usage(path.parent).free
        if needed > free:
            raise OSError(f"decoding {len(images)} images to {path} needs {needed / 2**30:.1f} GiB, "
                          f"{free / 2**30:.1f} GiB free; free space or set cache_dir elsewhere")
        for stale in path.parent.glob(f".{path.name}.tmp*"):
            stale.unlink()
        with atomic_path(path, keep_suffix=True) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=images.shape)
            for lo in range(0, len(images), chunk):
                out[lo:lo + chunk] = images[np.arange(lo, min(lo + chunk, len(images)))].numpy()
            out.flush()
            del out
    return DiskImages(path)


def materialise(images: FileImages, cache_path: Path | None, in_memory: bool | str = "auto"):
    """The decoded images as one uint8 tensor (read from / written to `cache_path`), or the
    lazy `images` themselves when `in_memory` is False, or "auto" and they exceed 4 GiB;
    "disk": decoded once into a memory-mapped file beside `cache_path` (for pools too big for
    memory that a GPU trains on: no decoding in the step loop; 3 x resolution^2 bytes each)."""
    if in_memory not in (True, False, "auto", "disk"):
        raise DataError(f"in_memory must be true, false, 'auto' or 'disk', got {in_memory!r}")
    if in_memory == "disk":
        if cache_path is None:
            raise DataError("in_memory='disk' needs a cache_dir to decode into")
        return decode_to_disk(images, cache_path.with_name(cache_path.stem + "-disk.npy"))
    n_bytes = len(images) * 3 * images.resolution ** 2
    if in_memory is False or (in_memory == "auto" and n_bytes > IN_MEMORY_LIMIT_BYTES):
        return images
    if cache_path is not None and cache_path.exists():
        try:
            cached = np.load(cache_path)
            if cached.shape == tuple(images.shape):
                return torch.from_numpy(cached)
            reason = f"shape {cached.shape}"
        except (ValueError, OSError, EOFError) as err:  # truncated or overwritten: derived data, so rebuild it
            reason = f"{type(err).__name__}: {str(err)[:80]}"
        warnings.warn(f"{cache_path}: a damaged decoded-image cache ({reason}); decoding the images again",
                      stacklevel=2)
        cache_path.unlink()
    decoded = images[np.arange(len(images))].numpy()
    if cache_path is not None:
        save_array_atomic(cache_path, decoded)
    return torch.from_numpy(decoded)


def save_array_atomic(path: Path, array: np.ndarray) -> None:
    """np.save under a temporary name, then rename: readers never see half a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, keep_suffix=True) as tmp:
        np.save(tmp, array)
