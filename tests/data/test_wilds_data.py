"""WILDS datasets through the `wilds` package, RoBERTa for text, and the model-variant
presets, on tiny copies written in the releases' on-disk formats."""
import numpy as np
import pandas as pd
import pytest
import torch
from wilds_copies import make_amazon, make_camelyon17, make_fmow, make_iwildcam, make_tiny_roberta

from toolkit.al.loop import run_active_learning
from toolkit.config import load_preset, resolve_config
from toolkit.data import create_dataset

pytest.importorskip("wilds")

MAKERS = {"iwildcam": make_iwildcam, "camelyon17": make_camelyon17, "fmow": make_fmow, "amazon": make_amazon}


@pytest.fixture(scope="module")
def wilds_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("wilds")
    for make in MAKERS.values():
        make(root)
    return root


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory):
    return make_tiny_roberta(tmp_path_factory.mktemp("roberta"))


def test_image_releases_load_with_v2_splits_and_group_attributes(wilds_root):
    train = create_dataset("iwildcam", "train", root=str(wilds_root), resolution=32, cache_dir=None)
    assert len(train) == 24 and train.images.shape == (24, 3, 32, 32) and train.num_classes == 3
    assert list(train.attributes.columns) == ["y", "location"] and train.extra_metrics == ("macro_f1",)
    assert train.class_names == ("empty", "tayassu pecari", "dasyprocta punctata")  # from categories.csv
    id_test = create_dataset("iwildcam", "id_test", root=str(wilds_root), resolution=32, cache_dir=None)
    assert not set(id_test.ids) & set(train.ids) and len(id_test) == 4
    # Camelyon17: the loader moves hospital 1 to val and hospital 2 to test, whatever the csv says
    cam = {s: create_dataset("camelyon17", s, root=str(wilds_root), resolution=32, cache_dir=None)
           for s in ("train", "val", "test", "id_val")}
    assert set(cam["val"].attributes["hospital"]) == {1} and set(cam["test"].attributes["hospital"]) == {2}
    assert set(cam["train"].attributes["hospital"]) == {0, 3, 4} and cam["train"].class_names == ("normal", "tumor")
    fmow = create_dataset("fmow", "test", root=str(wilds_root), resolution=32, cache_dir=None)
    assert len(fmow) == 6 and fmow.class_names[0] == "airport" and "region" in fmow.attributes
    with pytest.raises(ValueError, match="valid splits: train, val, test, id_val, id_test"):
        create_dataset("iwildcam", "holdout", root=str(wilds_root), cache_dir=None)


def test_streamed_images_equal_decoded_ones(wilds_root, tmp_path):
    from toolkit.data.image_files import FileImages

    lazy = create_dataset("iwildcam", "train", root=str(wilds_root), resolution=32, in_memory=False)
    cached = create_dataset("iwildcam", "train", root=str(wilds_root), resolution=32, cache_dir=str(tmp_path))
    assert isinstance(lazy.images, FileImages) and isinstance(cached.images, torch.Tensor)
    pos = np.array([3, 0, 17])
    assert torch.equal(lazy.get_batch(pos)[0], cached.get_batch(pos)[0])
    assert torch.equal(lazy.images[5], cached.images[5])
    assert len(list(tmp_path.rglob("*.npy"))) == 1


def test_disk_decoded_images_equal_streamed_ones_and_resume_from_nothing_half_written(wilds_root, tmp_path,
                                                                                      monkeypatch):
    """in_memory='disk': decoded once into a memory map, equal to streaming; a decode
    interrupted part-way leaves nothing, and the temporary file a kill (SIGKILL) leaves is
    removed by the next load."""
    from toolkit.data import image_files
    from toolkit.data.image_files import DiskImages

    lazy = create_dataset("iwildcam", "train", root=str(wilds_root), resolution=32, in_memory=False)
    real = image_files.FileImages.__getitem__
    calls = []

    def dies_on_second_chunk(self, index):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill mid-decode
        return real(self, index)

    monkeypatch.setattr(image_files.FileImages, "__getitem__", dies_on_second_chunk)
    monkeypatch.setattr(image_files.decode_to_disk, "__defaults__", (8,))  # chunks of 8: 3 for 24 images
    with pytest.raises(KeyboardInterrupt):
        create_dataset("iwildcam", "train", root=str(wilds_root), resolution=32, cache_dir=str(tmp_path),
                       in_memory="disk")
    assert list(tmp_path.rglob("*.npy")) == []  # an exception removes its temporary file (atomic_path)
    monkeypatch.setattr(image_files.FileImages, "__getitem__", real)
    disk = create_dataset("iwildcam", "train", root=str(wilds_root), resolution=32, cache_dir=str(tmp_path),
                          in_memory="disk")
    assert isinstance(disk.images, DiskImages) and disk.images.shape == (24, 3, 32, 32)
    [done] = tmp_path.rglob("*.npy")
    del disk
    done.unlink()  # what a SIGKILL mid-decode leaves: no cache, and a hidden temporary file
    stale = done.with_name(f".{done.name}.tmp99999.npy")
    stale.write_bytes(b"half written")
    disk = create_dataset("iwildcam", "train", root=str(wilds_root), resolution=32, cache_dir=str(tmp_path),
                          in_memory="disk")
    assert [p.name.startswith(".") for p in tmp_path.rglob("*.npy")] == [False]  # the stale one is gone
    pos = np.array([3, 0, 17, 3])
    assert torch.equal(disk.get_batch(pos)[0], lazy.get_batch(pos)[0])
    assert torch.equal(lazy.images[pos], torch.stack([lazy.images[int(i)] for i in pos]))  # threads keep order
    import pickle

    assert torch.equal(pickle.loads(pickle.dumps(disk.images))[pos], disk.images[pos])  # for loader workers
    with pytest.raises(ValueError, match="in_memory must be true, false, 'auto' or 'disk'"):
        create_dataset("iwildcam", "train", root=str(wilds_root), resolution=32, in_memory="ram")


def test_decoded_cache_follows_the_release_content_not_its_times(tmp_path):
    """#13: a cache is reused only for unchanged content. An edit that keeps the file's
    time makes a new cache (the old key, max mtime, reused the stale one); a copy of the
    release with new times reuses the cache (the old key made a new one)."""
    import os
    import shutil

    release = tmp_path / "a"
    make_iwildcam(release)
    caches = tmp_path / "cache"
    load = lambda root: create_dataset("iwildcam", "train", root=str(root), resolution=32,  # noqa: E731
                                       cache_dir=str(caches))
    first = load(release)
    assert len(list(caches.rglob("*.npy"))) == 1
    copy = tmp_path / "b"
    shutil.copytree(release, copy)  # new mtimes, same content
    assert load(copy).params["content"] == first.params["content"]
    assert len(list(caches.rglob("*.npy"))) == 1
    meta = release / "iwildcam_v2.0" / "metadata.csv"
    times = (meta.stat().st_atime, meta.stat().st_mtime)
    table = pd.read_csv(meta)
    table.loc[table["split"] == "train", "y"] = (table.loc[table["split"] == "train", "y"] + 1) % 3  # relabel
    table.to_csv(meta, index=False)
    os.utime(meta, times)  # the same time as before the edit
    edited = load(release)
    assert edited.params["content"] != first.params["content"]
    assert len(list(caches.rglob("*.npy"))) == 2 and not np.array_equal(edited.labels, first.labels)


def test_missing_release_says_where_and_what(tmp_path, wilds_root):
    with pytest.raises(FileNotFoundError, match="iwildcam_v2.0/.*metadata.csv.*get_dataset\\('iwildcam'"):
        create_dataset("iwildcam", "train", root=str(tmp_path))
    broken = tmp_path / "b"
    make_iwildcam(broken)
    meta = pd.read_csv(broken / "iwildcam_v2.0" / "metadata.csv")
    meta.drop(columns=["location_remapped"]).to_csv(broken / "iwildcam_v2.0" / "metadata.csv", index=False)
    with pytest.raises(ValueError, match="does not look like the WILDS release.*location_remapped"):
        create_dataset("iwildcam", "train", root=str(broken))


def test_headline_metrics_on_a_constructed_example():
    from toolkit.metrics import macro_f1, user_acc_p10, worst_region

    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    attrs = pd.DataFrame({"user": [0, 0, 1, 1, 2, 2], "region": [0, 1, 0, 1, 0, 1]})
    # per class: F1(0) = 2*0.5*0.5/(1) = 0.5, F1(1) = 2*(2/3)*1/(5/3) = 0.8, F1(2) = 2*1*0.5/1.5 = 2/3
    assert macro_f1(preds, labels, attrs)["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # per user accuracy 0.5, 1, 0.5 -> 10th percentile (linear) = 0.5
    assert user_acc_p10(preds, labels, attrs)["user_acc_p10"] == pytest.approx(0.5)
    # region 0: rows 0, 2, 4 all right; region 1: rows 1, 3, 5 -> 1/3
    assert worst_region(preds, labels, attrs)["worst_region"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("preset,model,metric", [("iwildcam", "timm_test_resnet", "test/macro_f1"),
                                                 ("camelyon17", "tiny_bit", "test/accuracy"),
                                                 ("fmow", "tiny_bit", "test/worst_region")])
def test_image_presets_two_rounds(preset, model, metric, wilds_root, tmp_path):
    cfg = resolve_config(preset, [f"data.params.root={wilds_root}", "data.params.resolution=32",
                                  f"data.params.cache_dir={tmp_path / 'c'}", f"model.name={model}",
                                  "model.weights=random", "finetune.max_steps=3", "al.seed_size=6",
                                  "al.per_round=3", "al.budget=3", "al.pool_subsample=null", "finetune.augment_pad=2",
                                  "loader_workers=0"])
    rec = run_active_learning(cfg, tmp_path / "run", log=None)
    assert rec.rounds["n_labels"].tolist() == [6, 9] and metric in rec.rounds
    group = {"iwildcam": "location", "camelyon17": "hospital", "fmow": "region"}[preset]
    assert group in rec.acquisitions and group in rec.meta["pool_attribute_shares"]


def test_amazon_preset_two_rounds_with_tiny_roberta(wilds_root, tiny_roberta, tmp_path):
    from toolkit.analysis import upsampling_ratios

    cfg = resolve_config("amazon", [f"data.params.root={wilds_root}", f"data.params.tokenizer={tiny_roberta}",
                                    "data.params.max_length=32", f"data.params.cache_dir={tmp_path / 'c'}",
                                    f"model.weights={tiny_roberta}", "finetune.max_steps=4", "al.seed_size=5",
                                    "al.per_round=2", "al.budget=2", "al.pool_subsample=20"])
    assert cfg.finetune.optimizer == "adamw" and cfg.finetune.base_lr == 1e-6 and cfg.finetune.batch_size == 2
    rec = run_active_learning(cfg, tmp_path / "run", log=None)
    assert rec.rounds["n_labels"].tolist() == [5, 7] and rec.rounds["train/steps"].tolist() == [4, 4]
    assert "test/user_acc_p10" in rec.rounds and "val/acc/y4" in rec.rounds
    assert {"user", "category", "product"} <= set(rec.acquisitions.columns)
    by_category = upsampling_ratios([rec], attribute="category")
    assert set(by_category["group"]) == {"0", "1", "2"} and by_category["acquired"].sum() == 2
    stars = upsampling_ratios([rec], attribute="label")
    assert stars["pool_share"].sum() == pytest.approx(1.0)
    from toolkit.analysis import upsampling_over_rounds

    over = upsampling_over_rounds([rec], attribute="category")
    assert over["round"].tolist() == [0, 0, 0] and set(over["group"]) == {"0", "1", "2"}


def test_text_and_image_caches_and_probe_on_tiny_copies(wilds_root, tiny_roberta, tmp_path):
    from toolkit.config import ALConfig
    from toolkit.features.cache import extract_features, open_cache
    from toolkit.features.probe import run_probe

    text = {"root": str(wilds_root), "tokenizer": str(tiny_roberta), "max_length": 32, "cache_dir": str(tmp_path / "c")}
    caches = {s: extract_features("roberta_large", "amazon", s, weights=str(tiny_roberta), dataset_params=text,
                                  root=tmp_path / "f", log=None) for s in ("train", "test")}
    cache = open_cache(caches["train"])
    assert cache.embeddings.shape == (30, 32) and "category" in cache.attributes
    rec = run_probe(caches["train"], {"test": caches["test"]}, tmp_path / "p",
                    al=ALConfig(seed_size=5, per_round=2, budget=4), seed=0)
    assert rec.rounds["n_labels"].tolist() == [5, 7, 9] and "test/user_acc_p10" in rec.rounds
    assert "category" in rec.acquisitions and "category" in rec.meta["pool_attribute_shares"]  # Fig. 5 in probe mode
    image = {"root": str(wilds_root), "resolution": 32, "cache_dir": str(tmp_path / "c")}
    path = extract_features("tiny_bit", "iwildcam", "train", weights="random", dataset_params=image,
                            root=tmp_path / "f", log=None)
    assert open_cache(path).embeddings.shape == (24, 128)


def test_text_model_sources(tiny_roberta):
    from toolkit.data.base import TextDataset
    from toolkit.data.tokenizers import load_tokenizer
    from toolkit.models import create_model

    short = TextDataset(name="t", split="train", images=torch.tensor([[0, 5, 2, 1, 1], [0, 7, 8, 2, 1]]),
                        attributes=pd.DataFrame({"y": [0, 1]}), class_names=("a", "b"), pad_id=1)
    batch, _ = short.get_batch(np.array([0, 1]))  # trimmed to the longest row, padding masked
    assert batch["input_ids"].tolist() == [[0, 5, 2, 1], [0, 7, 8, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    tok = load_tokenizer(str(tiny_roberta))
    batch = tok(["good solid nice", "awful"], padding=True, return_tensors="pt")
    trained = create_model("roberta_large", weights=str(tiny_roberta), num_classes=5)
    torch.manual_seed(0)
    untrained = create_model("roberta_large", weights=f"random:{tiny_roberta}", num_classes=5)
    x = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    assert trained.embed(x).shape == (2, 32) and torch.equal(trained(x), torch.zeros(2, 5))  # zero head
    assert not torch.allclose(trained.embed(x), untrained.embed(x))
    with pytest.raises(RuntimeError, match="save_pretrained"):  # the hub is unreachable in tests
        create_model("roberta_large", weights="pretrained", num_classes=5)
    with pytest.raises(FileNotFoundError, match="config.json"):
        create_model("roberta_large", weights=str(tiny_roberta / "nowhere"), num_classes=5)


VARIANTS = {"bit-s-r50x1": ("bit_s_r50x1", "tiny_bit"), "bit-m-r101x1": ("bit_m_r101x1", "tiny_bit"),
            "vit-b16": ("vit_b16", "timm_test_vit"), "unpretrained": ("bit_m_r50x1", "tiny_bit")}
VARIANT_PRESETS = [(f"{ds}-{v}", *VARIANTS[v]) for ds in ("waterbirds", "treeperson") for v in VARIANTS]


def test_every_preset_has_a_two_round_test():
    from toolkit.config import list_presets

    two_round_tests = {"toy", "waterbirds", "treeperson", "cifar10", "cifar10-imbalanced",  # test_datasets.py, conftest
                       "fashion-places",  # test_composite.py
                       "csv-images", "csv-text",  # test_csv_images.py
                       "spamassassin",  # tests/experiments/test_real_text.py
                       "iwildcam", "camelyon17", "fmow", "amazon", *(v for v, _, _ in VARIANT_PRESETS)}
    assert set(list_presets()) == two_round_tests


@pytest.mark.parametrize("variant,family,model", VARIANT_PRESETS)
def test_model_variant_presets(variant, family, model, tmp_path):
    from test_datasets import make_waterbirds

    base = variant.split("-")[0]
    cfg = resolve_config(variant)
    assert cfg.model.name == family and cfg.al == resolve_config(base).al  # only the model part differs
    assert cfg.model.weights == ("random" if variant.endswith("unpretrained") else "pretrained")
    if family == "vit_b16":
        assert cfg.data.params["resolution"] == 224 and cfg.data.params["root"] == load_preset(base)["data"]["params"]["root"]
    root = make_waterbirds(tmp_path / "d", splits=(0, 1) if base == "treeperson" else (0, 1, 2))
    run = resolve_config(variant, [f"data.params.root={root}", "data.params.resolution=32",
                                   f"data.params.cache_dir={tmp_path / 'c'}", f"model.name={model}",
                                   "model.weights=random", "finetune.max_steps=2", "al.seed_size=8",
                                   "al.per_round=4", "al.budget=4", "finetune.augment_pad=2"])
    assert run_active_learning(run, tmp_path / "run", log=None).rounds["n_labels"].tolist() == [8, 12]


def test_preset_base_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text(f"base: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(ValueError, match="circular"):
        load_preset(tmp_path / "a.yaml")
