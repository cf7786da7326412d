"""Real-dataset loaders on tiny copies generated in the releases' on-disk formats."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from toolkit.al.loop import run_active_learning
from toolkit.config import resolve_config
from toolkit.data import create_dataset


def make_waterbirds(root, n_per_group=(12, 4, 4, 12), splits=(0, 1, 2), subfolder=""):
    """A tiny Waterbirds in the group_DRO layout (or WILDS' with subfolder='waterbirds_v1.0')."""
    base = root / subfolder
    rows, i = [], 0
    rng = np.random.default_rng(0)
    for split in splits:
        for (y, place), n in zip([(0, 0), (0, 1), (1, 0), (1, 1)], n_per_group):
            for _ in range(n):
                fname = f"{'water' if y else 'land'}bird/img_{i}.jpg"
                (base / fname).parent.mkdir(parents=True, exist_ok=True)
                img = np.full((40, 48, 3), [60, 160, 60] if place == 0 else [40, 90, 200], np.uint8)
                img[12:28, 16:32] = [250, 250, 250] if y else [20, 20, 20]
                img = np.clip(img + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(base / fname)
                rows.append({"img_id": i, "img_filename": fname, "y": y, "split": split, "place": place,
                             "place_filename": f"/x/{i}.jpg"})
                i += 1
    pd.DataFrame(rows).to_csv(base / "metadata.csv", index=False)
    if subfolder:
        (base / "RELEASE_v1.0.txt").write_text("")
    return root


@pytest.mark.parametrize("subfolder", ["", "waterbirds_v1.0"])
def test_waterbirds_both_layouts(tmp_path, subfolder):
    root = make_waterbirds(tmp_path / "wb", subfolder=subfolder)
    ds = create_dataset("waterbirds", "train", root=str(root), resolution=32, cache_dir=str(tmp_path / "c"))
    assert ds.images.shape == (32, 3, 32, 32) and ds.num_classes == 2
    assert ds.attributes.groupby(["y", "place"]).size().tolist() == [12, 4, 4, 12]
    again = create_dataset("waterbirds", "train", root=str(root), resolution=32, cache_dir=str(tmp_path / "c"))
    assert (again.images == ds.images).all()  # from the decoded-image cache
    assert create_dataset("waterbirds", "test", root=str(root), resolution=32, cache_dir=None).ids.min() == 64


def test_missing_data_says_where_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.csv.*group_DRO.*data.params.root"):
        create_dataset("waterbirds", "train", root=str(tmp_path / "nowhere"))


def test_missing_column_and_bad_labels_and_bad_image(tmp_path):
    root = make_waterbirds(tmp_path / "wb")
    meta = pd.read_csv(root / "metadata.csv")
    meta.drop(columns=["place"]).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['place'\]"):
        create_dataset("waterbirds", "train", root=str(root), cache_dir=None)
    meta.assign(y=meta["y"] * 3).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"column .y. must hold integers in 0..1; rows \[16, 17, 18, 19, 20\] hold \[3, 3"):
        create_dataset("waterbirds", "train", root=str(root), cache_dir=None)
    meta.to_csv(root / "metadata.csv", index=False)
    (root / meta["img_filename"][0]).write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot read image .*img_0.jpg"):
        create_dataset("waterbirds", "train", root=str(root), resolution=32, cache_dir=None)


def test_treeperson_shipped_metadata_counts():
    from pathlib import Path

    import toolkit.data

    meta = pd.read_csv(Path(toolkit.data.__file__).parent / "treeperson-metadata.csv")
    counts = meta[meta.split == 0].groupby(["y", "place"]).size().tolist()
    assert counts == [3700, 370, 370, 3730]
    with pytest.raises(ValueError, match="valid splits: train, val"):
        create_dataset("treeperson", "test", root=".")


@pytest.mark.parametrize("preset", ["waterbirds", "treeperson"])
def test_preset_two_rounds_on_tiny_copy(preset, tmp_path):
    root = make_waterbirds(tmp_path / preset, splits=(0, 1) if preset == "treeperson" else (0, 1, 2))
    cfg = resolve_config(preset, [f"data.params.root={root}", "data.params.resolution=32",
                                  f"data.params.cache_dir={tmp_path / 'c'}", "model.name=timm_test_resnet",
                                  "model.weights=random", "finetune.max_steps=3", "al.seed_size=8",
                                  "al.per_round=4", "al.budget=4", "finetune.augment_pad=2"])
    rec = run_active_learning(cfg, tmp_path / "run", log=None)
    assert rec.rounds["n_labels"].tolist() == [8, 12]
    assert set(rec.acquisitions["group"]) <= {"y0_s0", "y0_s1", "y1_s0", "y1_s1"}
    splits = {c.split("/")[0] for c in rec.rounds.columns if c.endswith("/worst_group")}
    assert splits == ({"val"} if preset == "treeperson" else {"val", "test"})
    assert rec.meta["pool_group_shares"]["y0_s1"] == pytest.approx(4 / 32)


def test_extract_and_probe_on_tiny_waterbirds(tmp_path):
    from toolkit.config import ALConfig
    from toolkit.features.cache import extract_features
    from toolkit.features.probe import run_probe

    root = make_waterbirds(tmp_path / "wb")
    params = {"root": str(root), "resolution": 32, "cache_dir": str(tmp_path / "c")}
    caches = {s: extract_features("timm_test_resnet", "waterbirds", s, weights="random", dataset_params=params,
                                  root=tmp_path / "f", log=None) for s in ("train", "test")}
    rec = run_probe(caches["train"], {"test": caches["test"]}, tmp_path / "p",
                    al=ALConfig(seed_size=8, per_round=4, budget=8), seed=0)
    assert rec.rounds["n_labels"].tolist() == [8, 12, 16] and "test/worst_group" in rec.rounds


def make_cifar(root, per_class=6, test_per_class=2):
    import pickle

    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n_per):
        labels = np.repeat(np.arange(10), n_per)
        data = rng.integers(0, 255, (len(labels), 3 * 32 * 32), dtype=np.uint8)
        return {b"data": data, b"labels": labels.tolist()}

    for i in range(1, 6):
        (base / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per_class)))
    (base / "test_batch").write_bytes(pickle.dumps(batch(test_per_class)))
    return root


def test_cifar_splits_and_imbalance(tmp_path):
    root = make_cifar(tmp_path)
    train = create_dataset("cifar10", "train", root=str(root), val_size=50)
    val = create_dataset("cifar10", "val", root=str(root), val_size=50)
    assert len(train) == 250 and len(val) == 50 and not set(train.ids) & set(val.ids)
    imb = create_dataset("cifar10", "train", root=str(root), val_size=50, imbalanced=True, seed=3)
    counts = imb.attributes.groupby("y").size()
    rare = imb.attributes[imb.attributes.rare_class == 1]["y"].unique()
    assert len(rare) == 5 and all(counts[c] <= np.ceil(train.attributes.groupby("y").size()[c] * 0.1) for c in rare)
    val_imb = create_dataset("cifar10", "val_imbalanced", root=str(root), val_size=50, imbalanced=True, seed=3)
    assert set(val_imb.ids) < set(create_dataset("cifar10", "val", root=str(root), val_size=50, imbalanced=True,
                                                 seed=3).ids)
    assert val_imb.attributes.groupby("rare_class").size()[1] < val_imb.attributes.groupby("rare_class").size()[0]
    with pytest.raises(ValueError, match="only with imbalanced"):
        create_dataset("cifar10", "val_imbalanced", root=str(root), val_size=50)
    big = create_dataset("cifar10", "test", root=str(root), resolution=64)
    assert big.get_batch(np.arange(3))[0].shape == (3, 3, 64, 64)
    with pytest.raises(FileNotFoundError, match="torchvision.datasets.CIFAR10"):
        create_dataset("cifar10", "train", root=str(tmp_path / "none"))


@pytest.mark.parametrize("preset", ["cifar10", "cifar10-imbalanced"])
def test_cifar_presets_two_rounds(preset, tmp_path):
    root = make_cifar(tmp_path / "data")
    cfg = resolve_config(preset, [f"data.params.root={root}", "data.params.resolution=32", "data.params.val_size=50",
                                  "model.name=timm_test_resnet", "model.weights=random", "finetune.max_steps=3",
                                  "al.seed_size=10", "al.per_round=2", "al.budget=2", "al.pool_subsample=40",
                                  "finetune.augment_pad=2"])
    rec = run_active_learning(cfg, tmp_path / "run", log=None)
    assert rec.rounds["n_labels"].tolist() == [10, 12]
    assert "val/worst_class" in rec.rounds and "test/acc/y9" in rec.rounds
    assert ("val_imbalanced/worst_class" in rec.rounds) == (preset == "cifar10-imbalanced")
    assert "rare_class" in rec.acquisitions


@pytest.mark.parametrize("column,value,message", [
    ("y", 0.5, r"column 'y' must hold integers in 0..1; rows \[0\] hold \[0.5\]"),
    ("y", None, r"column 'y' must hold integers in 0..1; rows \[0\] hold \[nan\]"),
    ("y", "bird", r"column 'y' must hold integers in 0..1; rows \[0\] hold \['bird'\]"),
    ("place", 3, r"column 'place' must hold integers in 0..1; rows \[0\] hold \[3\]"),
    ("split", 7, r"column 'split' must hold integers in 0..2"),
    ("img_id", 1, r"img_id must be unique; \[1\] appear more than once"),
    ("img_filename", None, r"column 'img_filename' must hold a relative image path in every row; rows \[0\] hold \[nan\]"),
    ("img_filename", ".", r"img_filename '\.' is a folder"),
])
def test_waterbirds_metadata_is_validated_column_by_column(tmp_path, column, value, message):
    import pandas as pd

    root = make_waterbirds(tmp_path / "wb")
    meta = pd.read_csv(root / "metadata.csv")
    meta[column] = meta[column].astype(object)
    meta.loc[0, column] = value
    meta.to_csv(root / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=message):
        create_dataset("waterbirds", "train", root=str(root), resolution=32, cache_dir=None)


def test_empty_metadata_is_named(tmp_path):
    (tmp_path / "metadata.csv").write_text("")
    with pytest.raises(ValueError, match=r"metadata.csv is empty; expected a header img_id"):
        create_dataset("waterbirds", "train", root=str(tmp_path), resolution=32, cache_dir=None)


def test_binary_metadata_is_named(tmp_path):
    (tmp_path / "metadata.csv").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"metadata.csv is not a readable CSV text file"):
        create_dataset("waterbirds", "train", root=str(tmp_path), resolution=32, cache_dir=None)


def test_a_truncated_decoded_cache_is_decoded_again(tmp_path):
    root = make_waterbirds(tmp_path / "wb")
    kw = dict(root=str(root), resolution=32, cache_dir=str(tmp_path / "c"))
    first = create_dataset("waterbirds", "train", **kw).images.clone()
    cached = next((tmp_path / "c").rglob("*.npy"))
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])
    with pytest.warns(UserWarning, match="a damaged decoded-image cache .* decoding the images again"):
        again = create_dataset("waterbirds", "train", **kw).images
    assert torch.equal(again, first)
    assert torch.equal(create_dataset("waterbirds", "train", **kw).images, first)  # repaired: no warning needed


def test_decoded_cache_follows_content_not_names_and_times(tmp_path):
    import os

    from PIL import Image

    root = make_waterbirds(tmp_path / "wb")
    kw = dict(root=str(root), resolution=32, cache_dir=str(tmp_path / "c"))
    before = create_dataset("waterbirds", "train", **kw)
    image = root / before.attributes["img_filename"].iloc[0]
    stat = image.stat()
    Image.new("RGB", (48, 40), (255, 0, 0)).save(image)  # same name...
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and the same times
    after = create_dataset("waterbirds", "train", **kw)
    assert after.params["content"] != before.params["content"]
    assert not torch.equal(after.images[0], before.images[0]) and torch.equal(after.images[1:], before.images[1:])
