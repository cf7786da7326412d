"""A Waterbirds compositor: masked objects pasted onto background photos, written in the
Waterbirds on-disk layout (`metadata.csv` + images) that `load_metadata_images` reads.

group_DRO's `dataset_scripts/generate_waterbirds.py` pastes each CUB bird (its image times
its segmentation mask) onto a Places photo warped to the bird image's size, with place
assigned per split so that 95% of training birds sit on their matching place and val/test
are balanced. This module keeps that recipe and adds what a generator needs to be reused:

- exact per-split (label, place) counts (`waterbirds_counts`), so the pool size stays
  constant while the matched fraction varies (the dose-response variants);
- a fixed output size with drawn nuisances (object scale, position, flips, a random crop of
  the background photo, an optional colour tint), recorded per image in `metadata.csv`;
- objects split across train/val/test before anything is drawn, never reused;
- reproducible from one seed, and written atomically (temporary sibling folder, renamed).

`cub_objects` and `places_backgrounds` adapt the real CUB-200-2011 and Places365 folders;
`fashion_mnist.py` builds a small stand-in from data that packages ship.
"""
from __future__ import annotations

import colorsys
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from toolkit.data.metadata_images import SPLIT_CODES
from toolkit.errors import DataError, MissingFileError, OutputExistsError

COMPOSITOR_VERSION = 1
SPLITS = ("train", "val", "test")
GROUPS = ((0, 0), (0, 1), (1, 0), (1, 1))

# group_DRO's water birds: seabirds and waterfowl, matched as substrings of the species name.
WATER_BIRDS = ("Albatross", "Auklet", "Cormorant", "Frigatebird", "Fulmar", "Gull", "Jaeger", "Kittiwake",
               "Pelican", "Puffin", "Tern", "Gadwall", "Grebe", "Mallard", "Merganser", "Guillemot", "Pacific_Loon")
LAND_PLACES = ("bamboo_forest", "forest/broadleaf")
WATER_PLACES = ("ocean", "lake/natural")


@dataclass(frozen=True)
class Pool:
    """Source images by id, decoded on demand (CUB and Places are too big to hold).

    Args:
        ids: stable source ids (e.g. the relative file path); their order is part of the
            seed's meaning, so adapters list them sorted.
        load: id -> HxWx3 uint8 image (backgrounds), or (image, mask) with an HxW bool or
            [0, 1] float mask (objects).
    """

    ids: tuple[str, ...]
    load: Callable[[str], object]


@dataclass(frozen=True)
class Nuisance:
    """Ranges of the per-image draws (all independent of label and place).

    Args:
        scale: (min, max) of the object's longer side, as a fraction of the output side.
        crop: (min, max) side of the square background crop, as a fraction of the photo's
            shorter side; a few photos then give many distinct backgrounds.
        tint: maximum saturation of a random object colour (hue uniform); 0 keeps the
            object's own colours. Grey objects become coloured ones.
    """

    scale: tuple[float, float] = (0.35, 0.55)
    crop: tuple[float, float] = (0.3, 0.7)
    tint: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        object.__setattr__(self, "crop", tuple(float(v) for v in self.crop))
        for name, (lo, hi) in (("scale", self.scale), ("crop", self.crop)):
            if not 0 < lo <= hi <= 1:
                raise DataError(f"Nuisance.{name} must satisfy 0 < min <= max <= 1, got {(lo, hi)}")
        if not 0 <= self.tint <= 1:
            raise DataError(f"Nuisance.tint must lie in [0, 1], got {self.tint}")


# ---------------------------------------------------------------------------- one image

def draw_placement(rng: np.random.Generator, object_shape: tuple[int, int], background_shape: tuple[int, int],
                   size: int, nuisance: Nuisance = Nuisance()) -> dict:
    """The nuisance draws for one composite, as plain numbers (recorded in metadata.csv).

    Args:
        rng: the generator to draw from.
        object_shape: (height, width) of the object's mask bounding box.
        background_shape: (height, width) of the background photo.
        size: output side in pixels.
        nuisance: the ranges to draw from.
    """
    bh, bw = background_shape
    side = max(1, int(round(rng.uniform(*nuisance.crop) * min(bh, bw))))
    crop_x, crop_y = int(rng.integers(0, bw - side + 1)), int(rng.integers(0, bh - side + 1))
    oh, ow = object_shape
    longest = max(1, int(round(rng.uniform(*nuisance.scale) * size)))
    obj_w, obj_h = max(1, round(ow * longest / max(oh, ow))), max(1, round(oh * longest / max(oh, ow)))
    hue, sat = rng.uniform(), rng.uniform(0, nuisance.tint)
    return {"crop_x": crop_x, "crop_y": crop_y, "crop_side": side,
            "obj_x": int(rng.integers(0, size - obj_w + 1)), "obj_y": int(rng.integers(0, size - obj_h + 1)),
            "obj_w": int(obj_w), "obj_h": int(obj_h),
            "flip_background": bool(rng.integers(2)), "flip_object": bool(rng.integers(2)),
            "tint": "#%02x%02x%02x" % tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, sat, 1.0))}


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the mask's support (> 0.5), bottom/right exclusive."""
    rows, cols = np.flatnonzero((mask > 0.5).any(1)), np.flatnonzero((mask > 0.5).any(0))
    if not len(rows):
        raise DataError("the object mask is empty: nothing to paste")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def paste(obj: np.ndarray, mask: np.ndarray, background: np.ndarray, size: int, placement: dict) -> np.ndarray:
    """Alpha-blend the masked object onto the cropped background; deterministic given `placement`.

    Args:
        obj: HxWx3 uint8 object image (only the masked part is used).
        mask: HxW bool or [0, 1] float mask of the object.
        background: H'xW'x3 uint8 photo.
        size: output side in pixels.
        placement: the draws from `draw_placement`.

    Returns:
        (size, size, 3) uint8 composite.
    """
    p = placement
    bg = Image.fromarray(background).crop((p["crop_x"], p["crop_y"], p["crop_x"] + p["crop_side"],
                                           p["crop_y"] + p["crop_side"]))
    bg = np.array(bg.resize((size, size), Image.LANCZOS), dtype=np.float32)  # a writable copy
    if p["flip_background"]:
        bg = bg[:, ::-1]
    top, bottom, left, right = mask_box(mask)
    alpha = Image.fromarray(np.asarray(mask[top:bottom, left:right], dtype=np.float32))
    alpha = np.clip(np.asarray(alpha.resize((p["obj_w"], p["obj_h"]), Image.BILINEAR)), 0, 1)[..., None]
    fg = Image.fromarray(np.ascontiguousarray(obj[top:bottom, left:right]))
    fg = np.asarray(fg.resize((p["obj_w"], p["obj_h"]), Image.LANCZOS), dtype=np.float32)
    fg = fg * (np.frombuffer(bytes.fromhex(p["tint"][1:]), np.uint8).astype(np.float32) / 255)
    if p["flip_object"]:
        fg, alpha = fg[:, ::-1], alpha[:, ::-1]
    y, x = p["obj_y"], p["obj_x"]
    window = bg[y:y + p["obj_h"], x:x + p["obj_w"]]
    bg[y:y + p["obj_h"], x:x + p["obj_w"]] = alpha * fg + (1 - alpha) * window
    return np.clip(np.rint(bg), 0, 255).astype(np.uint8)


def composite(obj: np.ndarray, mask: np.ndarray, background: np.ndarray, *, size: int,
              rng: np.random.Generator, nuisance: Nuisance = Nuisance()) -> np.ndarray:
    """One composite image: draw the nuisances from `rng`, then `paste`.

    Args:
        obj: HxWx3 uint8 object image.
        mask: HxW bool or [0, 1] float mask.
        background: H'xW'x3 uint8 photo.
        size: output side in pixels.
        rng: source of the nuisance draws.
        nuisance: their ranges.
    """
    top, bottom, left, right = mask_box(mask)
    placement = draw_placement(rng, (bottom - top, right - left), background.shape[:2], size, nuisance)
    return paste(obj, mask, background, size, placement)


# ---------------------------------------------------------------------------- group counts

def waterbirds_counts(n_train: int, matched_fraction: float, minority_fraction: float, n_val: int,
                      n_test: int) -> dict[str, dict[tuple[int, int], int]]:
    """Exact (label, place) counts per split, Waterbirds style.

    Train: `minority_fraction` of the n_train images have label 1, and within each class
    `matched_fraction` have place == label. Val and test: the four groups equal (50%
    matched, balanced labels). The train total is n_train whatever the fractions, so
    variants that differ only in matched_fraction have pools of one size.

    Args:
        n_train: training images.
        matched_fraction: share of place == label within each training class, in [0, 1].
        minority_fraction: share of label 1 in the training split, in [0, 1].
        n_val, n_test: images in val and test; multiples of 4.
    """
    for name, value in (("matched_fraction", matched_fraction), ("minority_fraction", minority_fraction)):
        if not 0 <= value <= 1:
            raise DataError(f"{name} must lie in [0, 1], got {value}")
    if n_train < 0:
        raise DataError(f"n_train must be >= 0, got {n_train}")
    for name, value in (("n_val", n_val), ("n_test", n_test)):
        if value < 0 or value % 4:
            raise DataError(f"{name} must be a non-negative multiple of 4 (four equal groups), got {value}")
    n1 = int(round(n_train * minority_fraction))
    n0 = n_train - n1
    m0, m1 = int(round(n0 * matched_fraction)), int(round(n1 * matched_fraction))
    return {"train": {(0, 0): m0, (0, 1): n0 - m0, (1, 0): n1 - m1, (1, 1): m1},
            "val": {g: n_val // 4 for g in GROUPS}, "test": {g: n_test // 4 for g in GROUPS}}


def _check_counts(counts: Mapping) -> dict[str, dict[tuple[int, int], int]]:
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise DataError(f"counts: unknown split(s) {sorted(unknown)}; valid splits: {', '.join(SPLITS)}")
    out = {}
    for split in SPLITS:
        groups = {tuple(int(v) for v in g): int(n) for g, n in counts.get(split, {}).items()}
        bad = [g for g, n in groups.items() if g not in GROUPS or n < 0]
        if bad:
            raise DataError(f"counts[{split!r}]: groups must be (label, place) in {list(GROUPS)} with counts >= 0; "
                             f"got {bad}")
        out[split] = groups
    return out


# ---------------------------------------------------------------------------- the dataset

def split_objects(objects: Mapping[int, Pool], counts: Mapping, seed: int) -> dict[tuple[str, int], list[str]]:
    """Disjoint object ids per (split, label), drawn reproducibly before anything else:
    one shuffle of each label's pool, cut in split order, so no object is in two splits."""
    rng = np.random.default_rng([seed, COMPOSITOR_VERSION, 0])
    out = {}
    for y in sorted(objects):
        ids = list(objects[y].ids)
        order = rng.permutation(len(ids))
        need = [sum(n for (label, _), n in counts[s].items() if label == y) for s in SPLITS]
        if sum(need) > len(ids):
            raise DataError(f"label {y}: the counts need {sum(need)} objects ({dict(zip(SPLITS, need))}) but its "
                             f"pool has {len(ids)}; objects are never reused, so lower the counts")
        start = 0
        for s, n in zip(SPLITS, need):
            out[s, y] = [ids[i] for i in order[start:start + n]]
            start += n
    return out


def make_composite(out_dir: str | Path, objects: Mapping[int, Pool], backgrounds: Mapping[int, Pool], *,
                   counts: Mapping, size: int, seed: int, nuisance: Nuisance = Nuisance(),
                   describe: dict | None = None) -> Path:
    """Write a Waterbirds-layout dataset: `out_dir/metadata.csv` and PNGs under `out_dir/<split>/`.

    metadata.csv has img_id, img_filename, y, split (0 train, 1 val, 2 test), place, the
    source ids (object_id, background_id) and every nuisance draw. Backgrounds: each
    place's pool is shuffled once and dealt in turn across train, val, test, so a photo is
    reused (with a new crop) only when the pool is smaller than the demand, as in
    group_DRO, where every image gets its own Places photo.

    Args:
        out_dir: the folder to create; must not exist or be empty.
        objects: label (0, 1) -> pool of (image, mask) sources.
        backgrounds: place (0, 1) -> pool of background photos.
        counts: split -> {(label, place): n}, exact (see `waterbirds_counts`).
        size: output side in pixels.
        seed: one seed for everything; another seed gives other draws.
        nuisance: ranges of the per-image draws.
        describe: extra JSON-able facts about the sources, saved in composite.json.

    Returns:
        out_dir, complete: everything is written to a temporary sibling folder first and
        renamed at the end, so an interrupted run never leaves a complete-looking folder.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise OutputExistsError(f"{out_dir} already exists and is not empty; refusing to overwrite it. "
                              f"Delete it or choose another out_dir.")
    counts = _check_counts(counts)
    missing = [f"objects[{y}]" for y in (0, 1) if y not in objects] + \
              [f"backgrounds[{p}]" for p in (0, 1) if p not in backgrounds]
    if missing:
        raise DataError(f"make_composite: missing pool(s) {missing}; need objects and backgrounds for 0 and 1")
    empty = [f"backgrounds[{p}]" for p in (0, 1) if not backgrounds[p].ids]
    if empty:
        raise DataError(f"make_composite: {empty} has no images")
    assigned = split_objects(objects, counts, seed)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        rows = _write_images(tmp, objects, backgrounds, counts, assigned, size, seed, nuisance)
        pd.DataFrame(rows).to_csv(tmp / "metadata.csv", index=False)
        info = {"version": COMPOSITOR_VERSION, "size": size, "seed": seed, "nuisance": asdict(nuisance),
                "counts": {s: {f"{y},{p}": n for (y, p), n in c.items()} for s, c in counts.items()},
                **(describe or {})}
        (tmp / "composite.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _write_images(tmp: Path, objects, backgrounds, counts, assigned, size, seed, nuisance) -> list[dict]:
    deal_rng = np.random.default_rng([seed, COMPOSITOR_VERSION, 1])
    decks = {p: [backgrounds[p].ids[i] for i in deal_rng.permutation(len(backgrounds[p].ids))] for p in (0, 1)}
    dealt = {0: 0, 1: 0}
    rows, img_id = [], 0
    for k, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, COMPOSITOR_VERSION, 2, k])
        groups = np.array([g for g in GROUPS for _ in range(counts[split].get(g, 0))], dtype=np.int64).reshape(-1, 2)
        groups = groups[rng.permutation(len(groups))]  # ids must not reveal the group
        next_object = {0: iter(assigned[split, 0]), 1: iter(assigned[split, 1])}
        (tmp / split).mkdir()
        for y, place in groups.tolist():
            object_id = next(next_object[y])
            deck = decks[place]
            background_id = deck[dealt[place] % len(deck)]
            dealt[place] += 1
            obj, mask = objects[y].load(object_id)
            background = backgrounds[place].load(background_id)
            top, bottom, left, right = mask_box(mask)
            placement = draw_placement(rng, (bottom - top, right - left), background.shape[:2], size, nuisance)
            filename = f"{split}/{img_id:06d}.png"
            Image.fromarray(paste(obj, mask, background, size, placement)).save(tmp / filename)
            rows.append({"img_id": img_id, "img_filename": filename, "y": y, "split": SPLIT_CODES[split],
                         "place": place, "object_id": object_id, "background_id": background_id, **placement})
            img_id += 1
    return rows


def _publish(tmp: Path, out_dir: Path) -> None:
    """Rename the finished folder into place (atomic on one file system; replaces only an
    empty folder). Another process that finished first wins: FileExistsError."""
    try:
        os.replace(tmp, out_dir)
    except OSError as err:
        if out_dir.exists():
            raise OutputExistsError(f"{out_dir} appeared while it was being written (another process?): {err}") from err
        raise


# ---------------------------------------------------------------------------- CUB and Places

def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def cub_objects(cub_root: str | Path) -> dict[int, Pool]:
    """CUB-200-2011 birds as objects: label 0 landbird, 1 waterbird (group_DRO's species list).

    Layout (CUB_200_2011.tgz, plus the separately distributed segmentations.tgz):
        cub_root/images.txt, image_class_labels.txt, classes.txt, images/<class>/<name>.jpg
        cub_root/segmentations/<class>/<name>.png (or the sibling cub_root/../segmentations)
    Masks are the soft segmentations / 255, as group_DRO uses them. Ids are image paths.

    Args:
        cub_root: the CUB_200_2011 folder (or the folder holding it).
    """
    root = Path(cub_root)
    if not (root / "images.txt").exists() and (root / "CUB_200_2011" / "images.txt").exists():
        root = root / "CUB_200_2011"
    needed = ["images.txt", "image_class_labels.txt", "classes.txt"]
    if any(not (root / f).exists() for f in needed):
        raise MissingFileError(f"cub_objects: {root} lacks {[f for f in needed if not (root / f).exists()]}. "
                                f"Expected the CUB_200_2011 layout (images.txt, image_class_labels.txt, classes.txt, "
                                f"images/); get CUB_200_2011.tgz and segmentations.tgz from the Caltech-UCSD page.")
    seg_root = next((d for d in (root / "segmentations", root.parent / "segmentations") if d.is_dir()), None)
    if seg_root is None:
        raise MissingFileError(f"cub_objects: no segmentations/ in {root} or {root.parent}; the masks come separately "
                                f"(segmentations.tgz): extract it there.")
    def read(name: str) -> pd.Series:  # "<id> <value>" per line
        return pd.read_csv(root / name, sep=" ", header=None, names=["id", "value"], index_col="id")["value"]

    files, labels, classes = read("images.txt"), read("image_class_labels.txt"), read("classes.txt")
    water_words = [w.lower() for w in WATER_BIRDS]
    is_water = {c: int(any(w in name.split(".", 1)[1].lower() for w in water_words)) for c, name in classes.items()}

    def load(rel: str) -> tuple[np.ndarray, np.ndarray]:
        with Image.open(seg_root / Path(rel).with_suffix(".png")) as seg:
            mask = np.asarray(seg.convert("L"), dtype=np.float32) / 255
        return _rgb(root / "images" / rel), mask

    pools = {0: [], 1: []}
    for i, rel in files.items():
        pools[is_water[labels[i]]].append(rel)
    return {y: Pool(tuple(sorted(ids)), load) for y, ids in pools.items()}


def places_backgrounds(places_root: str | Path, land_categories: Sequence[str] = LAND_PLACES,
                       water_categories: Sequence[str] = WATER_PLACES) -> dict[int, Pool]:
    """Places365 photos as backgrounds: place 0 land, 1 water (group_DRO's categories).

    Layout: `<root>/<first letter>/<category>/*.jpg`, e.g. root/b/bamboo_forest/x.jpg and
    root/f/forest/broadleaf/y.jpg; `root` may also be the folder holding data_large/ or
    data_256/. Ids are paths relative to that root.

    Args:
        places_root: the Places365 image folder.
        land_categories, water_categories: category names, e.g. "forest/broadleaf".
    """
    given = Path(places_root)
    root = next((given / sub for sub in ("data_large", "data_256") if (given / sub).is_dir()), given)
    pools = {}
    for place, categories in enumerate((land_categories, water_categories)):
        ids = []
        for category in categories:
            folder = root / category[0] / category
            found = sorted(p.relative_to(root).as_posix() for p in folder.glob("*.jpg")) if folder.is_dir() else []
            if not found:
                raise MissingFileError(f"places_backgrounds: no .jpg in {folder} (category {category!r}). Expected "
                                        f"the Places365 layout ROOT/<first letter>/<category>/*.jpg under {root}.")
            ids += found
        pools[place] = Pool(tuple(ids), lambda rel: _rgb(root / rel))
    return pools
