"""Fashion places: a Waterbirds-like world of real images, built from data that packages ship.

Objects are Fashion-MNIST items (label = a family of classes, default footwear vs tops);
the spurious place is the family of the background photo (natural textures vs built
scenes), cut as random crops from the photos scikit-image and scikit-learn ship. The
compositor (`composite.make_composite`) pastes each item once, 95% of training items on
their matching place, val and test balanced, and the result loads like Waterbirds.

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist)
or torchvision's download (ROOT/FashionMNIST/raw); IDX files, gzipped or not.

The grey items are tinted with a random colour (hue uniform, saturation up to `tint`),
drawn independently of label and place: backbones are pretrained on colour photos, where
objects have colour, and a random tint adds a nuisance without adding a cue, so the label
stays readable only from the item's shape, as the bird type only from the bird. tint=0
keeps them grey.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from toolkit._util.paths import default_dir
from toolkit.data.base import GroupedDataset
from toolkit.data.composite import COMPOSITOR_VERSION, Nuisance, Pool, make_composite, waterbirds_counts
from toolkit.data.metadata_images import MetadataLayout, load_metadata_images
from toolkit.data.registry import register_dataset
from toolkit.errors import DataError, MissingFileError

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)  # Debian's dataset-fashion-mnist
MASK_THRESHOLD = 10  # items lie on exact black; a little slack for faint noise

LABEL_CLASSES = (("Sandal", "Sneaker", "Ankle boot"), ("T-shirt/top", "Pullover", "Shirt"))
FAMILY_NAMES = {LABEL_CLASSES[0]: "footwear", LABEL_CLASSES[1]: "tops"}
# Place 0 "natural" (textures of the ground, a plant), place 1 "built" (masonry, a garage,
# a pagoda); each mixes grey and colour photos, so greyness alone does not tell the place.
PLACE_PHOTOS = (("grass.png", "gravel.png", "flower.jpg"), ("brick.png", "motorcycle_left.png", "china.jpg"))
PLACE_NAMES = ("natural", "built")
# Photo folders inside the installed packages: (import name, folder, pip name).
PHOTO_FOLDERS = (("skimage", "data", "scikit-image"), ("sklearn", "datasets/images", "scikit-learn"))
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# ---------------------------------------------------------------------------- Fashion-MNIST files

def _idx_file(folder: Path, stem: str) -> Path | None:
    return next((folder / n for n in (stem, stem + ".gz") if (folder / n).is_file()), None)


def find_fashion_mnist(root: str | Path | None = None, *, system_dirs: Sequence[Path] | None = None) -> Path:
    """The folder holding the four Fashion-MNIST IDX files (plain or .gz).

    Looks in `root`, then torchvision's `root/FashionMNIST/raw`, then `system_dirs`.

    Args:
        root: where the user put it (data.params.root), or None.
        system_dirs: system-wide folders; None: SYSTEM_DIRS (Debian's package).
    """
    system_dirs = SYSTEM_DIRS if system_dirs is None else system_dirs
    candidates = ([Path(root), Path(root) / "FashionMNIST" / "raw"] if root is not None else []) + \
        [Path(d) for d in system_dirs]
    for folder in candidates:
        if all(_idx_file(folder, stem) for pair in FILES.values() for stem in pair):
            return folder
    stems = ", ".join(stem for pair in FILES.values() for stem in pair)
    raise MissingFileError(
        f"Fashion-MNIST not found; looked in: {', '.join(map(str, candidates)) or '(nowhere)'} for {stems} "
        f"(plain or .gz). Get it with `apt-get install dataset-fashion-mnist` (-> /usr/share/datasets/fashion-mnist), "
        f"or torchvision.datasets.FashionMNIST(ROOT, download=True) on a machine with internet, then pass "
        f"data.params.root=ROOT.")


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not, as a numpy array.

    Header: two zero bytes, a type code (0x08 uint8 ... 0x0E float64), the number of
    dimensions, then each dimension as a big-endian uint32; the data follow, big-endian.

    Args:
        path: the file; gzip is recognised by its content, not its name.
    """
    path = Path(path)
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"{path}: not an IDX file: bad magic number {raw[:4].hex() or '(empty)'}; expected "
                         f"00 00 <type in {', '.join(f'{t:02x}' for t in IDX_TYPES)}> <ndim>, e.g. 00000803 for "
                         f"Fashion-MNIST images")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - 4 - 4 * ndim != expected:
        raise DataError(f"{path}: header says shape {dims} of {dtype} ({expected} bytes) but the file holds "
                         f"{len(raw) - 4 - 4 * ndim} bytes of data; is it truncated?")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(dims).astype(dtype.newbyteorder("="))


def read_fashion_mnist(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All 70,000 items: images (N, 28, 28) uint8, labels (N,), ids "train:i" / "t10k:i"."""
    images, labels, ids = [], [], []
    for part, (image_stem, label_stem) in FILES.items():
        x, y = read_idx(_idx_file(folder, image_stem)), read_idx(_idx_file(folder, label_stem))
        if x.ndim != 3 or len(x) != len(y):
            raise DataError(f"{folder}: {image_stem} has shape {x.shape} and {label_stem} {y.shape}; expected "
                             f"(N, H, W) images and N labels")
        images.append(x.astype(np.uint8))
        labels.append(y.astype(np.int64))
        ids += [f"{part}:{i}" for i in range(len(x))]
    return np.concatenate(images), np.concatenate(labels), ids


def fashion_objects(images: np.ndarray, labels: np.ndarray, ids: list[str],
                    label_classes: Sequence[Sequence[str]] = LABEL_CLASSES) -> dict[int, Pool]:
    """Label family k -> a pool of (grey image as RGB, mask = pixel > MASK_THRESHOLD).

    Args:
        images, labels, ids: from `read_fashion_mnist`.
        label_classes: two disjoint families of Fashion-MNIST class names.
    """
    index = {item: i for i, item in enumerate(ids)}

    def load(item: str) -> tuple[np.ndarray, np.ndarray]:
        image = images[index[item]]
        return np.repeat(image[..., None], 3, axis=2), image > MASK_THRESHOLD

    return {k: Pool(tuple(ids[i] for i in np.flatnonzero(np.isin(labels, [CLASSES.index(c) for c in family]))), load)
            for k, family in enumerate(label_classes)}


# ---------------------------------------------------------------------------- background photos

def photo_path(name: str) -> Path:
    """Where an installed package ships photo `name` (scikit-image's data, then scikit-learn's)."""
    looked = []
    for module, folder, pip_name in PHOTO_FOLDERS:
        try:
            spec = importlib.util.find_spec(module)  # locates the package without importing it
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            looked.append(f"{pip_name} (not installed: pip install {pip_name})")
            continue
        path = Path(spec.submodule_search_locations[0]) / folder / name
        if path.is_file():
            return path
        looked.append(str(path.parent))
    raise MissingFileError(f"background photo {name!r} not found; looked in: {'; '.join(looked)}. "
                            f"Install scikit-image (pip install scikit-image), or name other photos in place_photos.")


def photo_backgrounds(place_photos: Sequence[Sequence[str]] = PLACE_PHOTOS) -> dict[int, Pool]:
    """Place k -> a pool of the photos in family k, decoded once as RGB (grey ones repeated)."""
    pools = {}
    for k, family in enumerate(place_photos):
        photos = {}
        for name in family:
            with Image.open(photo_path(name)) as im:
                photos[name] = np.asarray(im.convert("RGB"))
        pools[k] = Pool(tuple(family), photos.__getitem__)
    return pools


# ---------------------------------------------------------------------------- the dataset

def _families(value, valid: Sequence[str] | None, what: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Two non-empty disjoint families of names (YAML gives lists; tuples fingerprint stably)."""
    try:
        a, b = (tuple(str(v) for v in family) for family in value)
    except (TypeError, ValueError):
        raise DataError(f"fashion_places: {what} must be two families of names, got {value!r}") from None
    unknown = [v for v in a + b if valid is not None and v not in valid]
    if unknown or not a or not b or set(a) & set(b):
        raise DataError(f"fashion_places: {what} = {value!r} must be two non-empty, disjoint families"
                         + (f"; unknown: {unknown}; valid: {', '.join(valid)}" if unknown else ""))
    return a, b


def _digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


@register_dataset("fashion_places")
def load_fashion_places(split: str, *, root: str | Path | None = None, n_train: int = 3000, n_val: int = 400,
                        n_test: int = 1000, matched_fraction: float = 0.95, minority_fraction: float = 0.25,
                        label_classes: Sequence[Sequence[str]] = LABEL_CLASSES,
                        place_photos: Sequence[Sequence[str]] = PLACE_PHOTOS, size: int = 64,
                        object_scale: Sequence[float] = (0.35, 0.55), background_crop: Sequence[float] = (0.3, 0.7),
                        tint: float = 0.5, seed: int = 0, resolution: int | None = None,
                        cache_dir: str | Path | None = "auto",
                        in_memory: bool | str = "auto") -> GroupedDataset:
    """One split of the Fashion places world (label "y": family of `label_classes`; spurious
    "place": 0 natural, 1 built), composited once into `cache_dir/fashion_places-<fingerprint>/`.

    Args:
        split: "train", "val" or "test".
        root: Fashion-MNIST folder (see `find_fashion_mnist`); None: the system package.
        n_train, n_val, n_test: images per split (val and test: multiples of 4).
        matched_fraction: share of training items on their matching place, per class.
        minority_fraction: share of label 1 in the training split.
        label_classes: two disjoint families of Fashion-MNIST class names (labels 0, 1).
        place_photos: two disjoint families of photo file names (places 0, 1).
        size: composite side in pixels.
        object_scale, background_crop, tint: the nuisance ranges (see composite.Nuisance).
        seed: everything that is drawn (object split, placements, crops).
        resolution: side the model sees; None keeps `size` (the whole composite is
            resized, never cropped, so no item is cut).
        cache_dir: where the composite and the decoded split are kept; None builds in a
            temporary folder and keeps nothing.
        in_memory: passed to `load_metadata_images`.
    """
    if split not in ("train", "val", "test"):  # before a build that takes seconds
        raise DataError(f"fashion_places: unknown split {split!r}; valid splits: train, val, test")
    label_classes = _families(label_classes, CLASSES, "label_classes")
    place_photos = _families(place_photos, None, "place_photos")
    nuisance = Nuisance(scale=tuple(object_scale), crop=tuple(background_crop), tint=tint)
    counts = waterbirds_counts(n_train, matched_fraction, minority_fraction, n_val, n_test)
    folder = find_fashion_mnist(root)
    photos = [photo_path(name) for family in place_photos for name in family]
    sources = {"fashion_mnist": _digest([_idx_file(folder, s) for pair in FILES.values() for s in pair]),
               "photos": _digest(photos)}
    params = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "matched_fraction": matched_fraction,
              "minority_fraction": minority_fraction, "label_classes": label_classes, "place_photos": place_photos,
              "size": size, "nuisance": asdict(nuisance), "seed": seed, "version": COMPOSITOR_VERSION}
    fp = hashlib.sha256(json.dumps({**params, "sources": sources}, sort_keys=True).encode()).hexdigest()[:16]
    class_names = tuple(FAMILY_NAMES.get(f, "+".join(f)) for f in label_classes)
    layout = MetadataLayout("fashion_places", class_names, "place", ("train", "val", "test"),
                            "Fashion-MNIST composited by toolkit.data.fashion_mnist")

    def build(out: Path) -> None:
        images, labels, ids = read_fashion_mnist(folder)
        make_composite(out, fashion_objects(images, labels, ids, label_classes), photo_backgrounds(place_photos),
                       counts=counts, size=size, seed=seed, nuisance=nuisance,
                       describe={"params": params, "sources": sources, "class_names": class_names,
                                 "place_names": PLACE_NAMES})

    cache_dir = default_dir(cache_dir, "datasets")
    resolution = resolution or size
    load = dict(resolution=resolution, resize=resolution, in_memory=in_memory)
    if cache_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp) / "composite")
            ds = load_metadata_images(layout, split, root=Path(tmp) / "composite", cache_dir=None,
                                      **{**load, "in_memory": True})
    else:
        out = Path(cache_dir) / f"fashion_places-{fp}"
        if not (out / "metadata.csv").exists():
            try:
                build(out)
            except FileExistsError:
                if not (out / "metadata.csv").exists():  # not a concurrent build of the same data
                    raise
        ds = load_metadata_images(layout, split, root=out, cache_dir=cache_dir, **load)
    # Not under "matched_fraction": that key marks a pool shrunk by resampling (loop.check_resampled_pool).
    ds.params.update(composite={**params, "place_names": PLACE_NAMES}, composite_fingerprint=fp, sources=sources)
    return ds
