"""`csv_images` (issue #24): any folder of images plus a table, groups from label x attributes."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from toolkit.data import create_dataset
from toolkit.metrics import group_metrics


def _folder(root, rows, *, csv="metadata.csv", sep=","):
    """Tiny images (their colour encodes the row) and a table with the given rows."""
    root.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(rows):
        Image.fromarray(np.full((12, 12, 3), i % 256, np.uint8)).save(root / r["file"])
    pd.DataFrame(rows).to_csv(root / csv, index=False, sep=sep)
    return root


def _rows(counts, split=None):
    """counts: {(label, attr): n} -> rows with files, labels, attributes (and a split)."""
    rows = []
    for (y, a), n in counts.items():
        rows += [{"file": f"im{len(rows) + k}.png", "label": y, "attribute": a, **({"split": split} if split else {})}
                 for k in range(n)]
    return rows


def test_group_counts_are_exact_from_a_split_column(tmp_path):
    train = {("cat", "indoor"): 7, ("cat", "outdoor"): 2, ("dog", "indoor"): 1, ("dog", "outdoor"): 5}
    test = {("cat", "indoor"): 3, ("cat", "outdoor"): 3, ("dog", "indoor"): 3, ("dog", "outdoor"): 3}
    root = _folder(tmp_path / "d", _rows(train, "train") + _rows(test, "test"), sep="\t")
    kw = dict(root=str(root), split_column="split", matched={"cat": "indoor", "dog": "outdoor"}, resolution=8,
              cache_dir=None)
    ds = create_dataset("csv_images", "train", **kw)
    assert ds.class_names == ("label=cat", "label=dog") and ds.matched and ds.images.shape == (15, 3, 8, 8)
    got = ds.attributes.groupby(["label", "attribute"]).size().to_dict()
    assert got == {(0, 0): 7, (0, 1): 2, (1, 0): 1, (1, 1): 5}  # cat=0 matched with indoor=0, dog=1 with outdoor=1
    assert len(create_dataset("csv_images", "test", **kw)) == 12


def test_a_seeded_fraction_split_and_its_errors(tmp_path):
    root = _folder(tmp_path / "d", _rows({(0, 0): 30, (1, 1): 30, (0, 1): 10, (1, 0): 10}))
    kw = dict(root=str(root), resolution=8, cache_dir=None, split_fractions=(0.5, 0.25, 0.25))
    sizes = [len(create_dataset("csv_images", s, **kw)) for s in ("train", "val", "test")]
    assert sizes == [40, 20, 20]
    same = create_dataset("csv_images", "train", **kw).ids
    other = create_dataset("csv_images", "train", **kw, split_seed=1).ids
    assert np.array_equal(same, create_dataset("csv_images", "train", **kw).ids) and not np.array_equal(same, other)
    assert not create_dataset("csv_images", "train", **kw).matched  # no pairing declared


@pytest.mark.parametrize("change,message", [
    (lambda m: m.assign(label=m["label"].astype(object).where(m.index != 3, None)),
     r"column 'label' \(the label\) is empty in rows \[3\]"),
    (lambda m: m.drop(columns="attribute"), r"has no column 'attribute' \(a group attribute\)"),
    (lambda m: m.assign(file=m["file"].where(m.index != 2, "missing.png")),
     r"1 image file\(s\) of split 'train' are missing or not files .* \['missing.png'\]"),
    (lambda m: m.assign(label=0), r"column 'label' holds one value"),
    (lambda m: m.assign(split=m["split"].where(m.index != 4, "holdout")),
     r"column 'split' holds \['holdout'\] in rows \[4\], which split_values does not map"),
])
def test_every_bad_table_gets_a_clear_error_naming_the_rows(tmp_path, change, message):
    root = _folder(tmp_path / "d", _rows({(0, 0): 4, (1, 1): 4}, "train"))
    meta = pd.read_csv(root / "metadata.csv")
    change(meta).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(ValueError if "missing" not in message else FileNotFoundError, match=message):
        create_dataset("csv_images", "train", root=str(root), split_column="split", resolution=8, cache_dir=None)


def test_matched_must_pair_values_one_to_one(tmp_path):
    root = _folder(tmp_path / "d", _rows({(0, 0): 4, (1, 1): 4}, "train"))
    with pytest.raises(ValueError, match="matched must pair every label value"):
        create_dataset("csv_images", "train", root=str(root), split_column="split", matched={0: 0, 1: 0},
                       resolution=8, cache_dir=None)


def test_celeba_attribute_file_with_two_attributes_gives_the_right_worst_group(tmp_path):
    root = tmp_path / "celeba"
    root.mkdir()
    rng = np.random.default_rng(0)
    lines, truth = [], []
    for i in range(32):
        blond, male, young = (1 if i % 2 else -1), (1 if (i // 2) % 2 else -1), (1 if (i // 4) % 2 else -1)
        name = f"{i:06d}.jpg"
        Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(root / name)
        lines.append(f"{name} {blond} {male} {young}")
        truth.append((blond, male, young))
    (root / "list_attr_celeba.txt").write_text(f"{len(lines)}\nBlond_Hair Male Young\n" + "\n".join(lines) + "\n")
    ds = create_dataset("csv_images", "train", root=str(root), csv="list_attr_celeba.txt", file_column="image_id",
                        label_column="Blond_Hair", attributes=["Male", "Young"], split_fractions=(1, 0, 0),
                        resolution=8, cache_dir=None)
    assert ds.spurious_column == "Male+Young" and ds.group_columns == ("Male", "Young") and not ds.matched
    assert len(ds) == 32 and sorted(ds.attributes["Male+Young"].unique()) == [0, 1, 2, 3]
    # a constructed prediction: right everywhere except on blond (1), male (1), young (1) -> that group at 0
    labels, combo = ds.labels, ds.attributes["Male+Young"].to_numpy()
    preds = labels.copy()
    wrong = (labels == 1) & (combo == 3)
    preds[wrong] = 0
    m = group_metrics(preds, labels, combo, matched=ds.matched)
    assert m["worst_group"] == 0.0 and m["acc/y1_s3"] == 0.0 and m["acc/y0_s3"] == 1.0
    assert "mismatched" not in m and m["accuracy"] == pytest.approx(1 - wrong.mean())


def test_the_decoded_cache_follows_the_content(tmp_path):
    root = _folder(tmp_path / "d", _rows({(0, 0): 4, (1, 1): 4}, "train"))
    kw = dict(root=str(root), split_column="split", resolution=8, cache_dir=str(tmp_path / "c"))
    first = create_dataset("csv_images", "train", **kw).images.clone()
    Image.fromarray(np.full((12, 12, 3), 200, np.uint8)).save(root / "im0.png")  # same name, new pixels
    again = create_dataset("csv_images", "train", **kw).images
    assert not (again[0] == first[0]).all() and (again[1:] == first[1:]).all()
    assert len(list((tmp_path / "c").rglob("*.npy"))) == 2


def test_fashion_places_exported_and_loaded_back_gives_the_same_probe_records(tmp_path):
    """The composite folder (images + metadata.csv) read through csv_images: same pixels, same ids,
    same groups, so the same probe-mode run record as the native loader."""
    pytest.importorskip("skimage", reason="scikit-image ships the background photos")
    import torch
    from test_composite import write_fashion

    from toolkit.config import ALConfig
    from toolkit.features.cache import extract_features
    from toolkit.features.probe import run_probe

    native = {"root": str(write_fashion(tmp_path / "fm", n_train=400, n_test=100)), "n_train": 120, "n_val": 8,
              "n_test": 40, "matched_fraction": 0.8, "size": 32, "cache_dir": str(tmp_path / "composites")}
    create_dataset("fashion_places", "train", **native)
    folder = next((tmp_path / "composites").glob("fashion_places-*"))
    exported = {"root": str(folder), "file_column": "img_filename", "label_column": "y", "attributes": ["place"],
                "matched": {0: 0, 1: 1}, "id_column": "img_id", "split_column": "split",
                "split_values": {"train": 0, "val": 1, "test": 2}, "resolution": 32, "resize": 32,
                "cache_dir": str(tmp_path / "decoded")}
    for split in ("train", "test"):
        a, b = create_dataset("fashion_places", split, **native), create_dataset("csv_images", split, **exported)
        assert torch.equal(a.images, b.images) and np.array_equal(a.ids, b.ids)
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.attributes["place"], b.attributes["place"])
    records = {}
    for name, params in (("fashion_places", native), ("csv_images", exported)):
        caches = {s: extract_features("efficientnet_lite0", name, s, weights="random", dataset_params=params,
                                      root=tmp_path / "features", log=None, seed=0) for s in ("train", "test")}
        records[name] = run_probe(caches["train"], {"test": caches["test"]}, tmp_path / "runs" / name,
                                  al=ALConfig(seed_size=8, per_round=4, budget=8), seed=0)
    a, b = records["fashion_places"], records["csv_images"]
    metrics = [c for c in a.rounds if c.startswith("test/")]
    assert "test/mismatched" in metrics and "test/worst_group" in metrics
    pd.testing.assert_frame_equal(a.rounds[metrics], b.rounds[metrics])
    assert a.acquisitions["id"].tolist() == b.acquisitions["id"].tolist()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_csv_text_runs_an_hf_encoder_through_the_loop_and_the_probe(fmt, tmp_path):
    pytest.importorskip("transformers")
    from wilds_copies import make_tiny_roberta

    from toolkit.al.loop import run_active_learning
    from toolkit.config import ALConfig, resolve_config
    from toolkit.features.cache import extract_features
    from toolkit.features.probe import run_probe

    folder = make_tiny_roberta(tmp_path / "roberta")
    rng = np.random.default_rng(0)
    words = ["good", "solid", "nice", "awful", "bad", "poor"]
    rows = [{"text": " ".join(rng.choice(words[:3] if y else words[3:], 4)) + (" not" if a else ""),
             "label": int(y), "negation": int(a)} for y, a in zip(rng.integers(0, 2, 80), rng.integers(0, 2, 80))]
    path = tmp_path / f"corpus.{fmt}"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True) if fmt == "jsonl" else \
        pd.DataFrame(rows).to_csv(path, index=False)
    params = {"path": str(path), "tokenizer": str(folder), "attributes": ["negation"], "max_length": 16,
              "split_fractions": [0.5, 0.25, 0.25], "cache_dir": str(tmp_path / "tok")}
    ds = create_dataset("csv_text", "train", **params)
    assert len(ds) == 40 and ds.images.shape == (40, 16) and not ds.matched
    assert ds.attributes.groupby(["label", "negation"]).size().sum() == 40
    caches = {s: extract_features("hf:tiny-roberta", "csv_text", s, weights=str(folder), dataset_params=params,
                                  root=tmp_path / "f", log=None) for s in ("train", "test")}
    rec = run_probe(caches["train"], {"test": caches["test"]}, tmp_path / "probe",
                    al=ALConfig(seed_size=6, per_round=2, budget=4), seed=0)
    assert rec.rounds["n_labels"].tolist() == [6, 8, 10] and "test/worst_group" in rec.rounds
    assert "test/mismatched" not in rec.rounds  # no pairing declared, so no mismatched groups
    cfg = resolve_config("csv-text", {"data": {"params": params},  # the preset's two rounds
                                      "model": {"name": "hf:tiny-roberta", "weights": str(folder)},
                                      "finetune": {"max_steps": 2}, "al": {"seed_size": 6, "budget": 2},
                                      "eval_batch_size": 16})
    run = run_active_learning(cfg, tmp_path / "run", log=None)
    assert run.status == "finished" and run.model == "hf:tiny-roberta" and run.rounds["n_labels"].tolist() == [6, 8]
    assert "val/worst_group" in run.rounds and "test/acc/y1_s1" in run.rounds


def test_the_csv_images_preset_two_rounds(tmp_path):
    from toolkit.al.loop import run_active_learning
    from toolkit.config import resolve_config

    root = _folder(tmp_path / "d", _rows({(0, 0): 20, (1, 1): 20, (0, 1): 5, (1, 0): 5}))
    cfg = resolve_config("csv-images", {"data": {"params": {"root": str(root), "resolution": 16, "matched": {0: 0, 1: 1},
                                                            "cache_dir": None}},
                                        "model": {"name": "timm:test_resnet", "weights": "random"},
                                        "finetune": {"max_steps": 2, "micro_batch": 8},
                                        "al": {"seed_size": 10, "per_round": 5, "budget": 5}})
    run = run_active_learning(cfg, tmp_path / "run", log=None)
    assert run.rounds["n_labels"].tolist() == [10, 15] and "test/mismatched" in run.rounds


def test_a_general_grouping_flows_through_records_separability_and_the_report(tmp_path):
    """Label x two attributes, no pairing: per-group metrics, upsampling, separability and the
    report work; no mismatched metric is invented."""
    from toolkit.analysis import upsampling_ratios
    from toolkit.analysis.separability import GroupSeparability
    from toolkit.config import ALConfig
    from toolkit.features.cache import extract_features, open_cache
    from toolkit.features.probe import run_probe
    from toolkit.report.html import build_report

    rng = np.random.default_rng(0)
    rows = [{"file": f"{i}.png", "label": int(y), "a": int(rng.random() < (0.8 if y else 0.2)),
             "b": int(rng.random() < 0.5)} for i, y in enumerate(rng.random(160) < 0.4)]
    root = _folder(tmp_path / "d", rows)
    params = {"root": str(root), "attributes": ["a", "b"], "resolution": 12, "cache_dir": None,
              "split_fractions": [0.6, 0.2, 0.2]}
    caches = {s: extract_features("toy_resnet", "csv_images", s, weights="random", dataset_params=params,
                                  root=tmp_path / "f", log=None) for s in ("train", "test")}
    pool = open_cache(caches["train"])
    assert pool.spurious_column == "a+b" and not pool.matched
    rec = run_probe(caches["train"], {"test": caches["test"]}, tmp_path / "run",
                    al=ALConfig(seed_size=10, per_round=5, budget=10), seed=0)
    assert "test/worst_group" in rec.rounds and "test/mismatched" not in rec.rounds
    assert {c for c in rec.rounds if c.startswith("test/acc/")} <= {f"test/acc/y{y}_s{s}" for y in (0, 1)
                                                                     for s in range(4)}
    assert upsampling_ratios([rec])["pool_share"].sum() == pytest.approx(1.0)
    sep = GroupSeparability(cv=2, random_state=0).fit(pool.embeddings, pool.labels, pool.spurious)
    assert len(sep.per_group_) == pool.attributes.groupby(["label", "a+b"]).ngroups
    page = build_report([rec.path], tmp_path / "report.html", representation=False)
    assert page.exists() and page.stat().st_size > 10_000
