"""Issue #31, zero silent wrong results: a split without a class, row order, hub failures and
the messages of bad data, each refused or named in one line."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from toolkit.cli import main
from toolkit.data import create_dataset
from toolkit.errors import AltkError, ConfigError, DataError, HubError, ModelError


def _images(root, n):
    """n tiny images im0.png.. (their colour encodes the number)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((12, 12, 3), (i * 7) % 256, np.uint8)).save(root / f"im{i}.png")
    return root


def _table(n, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return pd.DataFrame({"file": [f"im{i}.png" for i in range(n)], "label": labels,
                         "attribute": np.where(rng.random(n) < 0.8, labels, 1 - labels),
                         "img_id": 1000 + 3 * np.arange(n)})


def _one_line(err: BaseException) -> str:
    """The line the CLI prints for an AltkError (`altk CMD: error: ...`)."""
    assert isinstance(err, AltkError), type(err)
    return " ".join(str(err).split())


# --- 5. a split without one of the table's classes ---------------------------------------------

def test_an_eval_split_missing_a_class_is_refused_at_load(tmp_path):
    rows = _table(24).assign(split=["train"] * 16 + ["test"] * 8)
    rows.loc[16:, "label"] = 0  # the test split holds label 0 only
    rows.loc[[0, 1], "label"] = [0, 1]
    root = _images(tmp_path / "d", len(rows))
    rows.to_csv(root / "metadata.csv", index=False)
    kw = dict(root=str(root), split_column="split", resolution=8, cache_dir=None)
    assert len(create_dataset("csv_images", "train", **kw)) == 16  # the pool holds both classes
    with pytest.raises(DataError, match=r"split 'test' \(8 rows\) has no example of class label=1, which the table "
                                        r"holds .* worst-group .*assign rows of it to this split"):
        create_dataset("csv_images", "test", **kw)
    # the probe path: an eval cache is extracted from the same loader, so it is refused too
    from toolkit.features.cache import extract_features

    with pytest.raises(DataError, match="has no example of class label=1"):
        extract_features("toy_resnet", "csv_images", "test", weights="random", dataset_params=kw,
                         root=tmp_path / "f", log=None)


def test_an_eval_split_missing_a_group_is_refused_and_a_pool_missing_one_is_not(tmp_path):
    """Both classes but not every (label, attribute) group: worst-group would be over the groups
    present only. An evaluation split is refused, naming the group; the pool is accepted."""
    rows = pd.DataFrame({"file": [f"im{i}.png" for i in range(16)],
                         "label":     [0, 0, 1, 1, 0, 0, 1, 1] + [0, 0, 1, 1, 0, 0, 1, 1],
                         "attribute": [0, 1, 0, 1, 0, 1, 0, 1] + [0, 0, 1, 1, 0, 0, 1, 1],
                         "split": ["train"] * 4 + ["val"] * 4 + ["test"] * 8})
    root = _images(tmp_path / "d", len(rows))
    rows.to_csv(root / "metadata.csv", index=False)
    kw = dict(root=str(root), split_column="split", resolution=8, cache_dir=None)
    assert len(create_dataset("csv_images", "val", **kw)) == 4  # all four groups
    with pytest.raises(DataError, match=r"split 'test' \(8 rows\) has no example of the groups \(label=0, "
                                        r"attribute=1\), \(label=1, attribute=0\), which the table holds; its "
                                        r"worst-group"):
        create_dataset("csv_images", "test", **kw)
    rows.loc[[0, 1, 2, 3], ["label", "attribute"]] = [[0, 0], [0, 0], [1, 1], [1, 1]]  # the pool: matched only
    rows.to_csv(root / "metadata.csv", index=False)
    assert len(create_dataset("csv_images", "train", **kw)) == 4


def test_a_random_split_missing_a_class_names_the_fix_and_csv_text_refuses_it_too(tmp_path):
    rows = pd.DataFrame({"text": [f"w{i}" for i in range(21)], "label": [0] * 20 + [1], "attribute": [0] * 20 + [1]})
    path = tmp_path / "t.csv"
    rows.to_csv(path, index=False)
    refused = []
    for split in ("train", "val", "test"):  # the lone label-1 row lands in one split: the other two lack it
        try:
            create_dataset("csv_text", split, path=str(path), tokenizer="never-loaded", cache_dir=None)
        except DataError as err:
            refused.append(str(err))
        except Exception:  # the split with both classes goes on to its tokenizer, which is not there
            pass
    assert len(refused) == 2
    assert all("has no example of class label=1" in e and "change split_seed or split_fractions" in e for e in refused)


# --- 6. row order -------------------------------------------------------------------------------

def test_with_ids_the_row_order_changes_nothing(tmp_path):
    """The same rows shuffled: same dataset, digest, decoded cache, split, seed set, acquisitions and scores."""
    from toolkit.config import ALConfig
    from toolkit.features.cache import extract_features
    from toolkit.features.probe import run_probe

    rows = _table(60)
    root = _images(tmp_path / "d", len(rows))
    kw = dict(root=str(root), id_column="img_id", matched={0: 0, 1: 1}, resolution=8,
              cache_dir=str(tmp_path / "decoded"), split_fractions=(0.6, 0.2, 0.2), split_seed=3)
    got = []
    for order in ("given", "shuffled"):
        table = rows if order == "given" else rows.sample(frac=1, random_state=1)
        table.to_csv(root / "metadata.csv", index=False)
        splits = {s: create_dataset("csv_images", s, **kw) for s in ("train", "test")}
        caches = {s: extract_features("toy_resnet", "csv_images", s, weights="random", dataset_params=kw,
                                      root=tmp_path / order, log=None, seed=0) for s in ("train", "test")}
        rec = run_probe(caches["train"], {"test": caches["test"]}, tmp_path / f"run-{order}",
                        al=ALConfig(seed_size=6, per_round=3, budget=6), seed=0)
        got.append((splits, caches, rec))
    (a, ca, ra), (b, cb, rb) = got
    for s in ("train", "test"):
        assert np.array_equal(a[s].ids, b[s].ids) and np.array_equal(a[s].labels, b[s].labels)
        assert (a[s].images == b[s].images).all() and a[s].content_digest() == b[s].content_digest()
        assert a[s].params == b[s].params and ca[s].name == cb[s].name  # one cache key
    assert len(list((tmp_path / "decoded").rglob("*.npy"))) == 2  # one decoded file per split, reused
    assert ra.acquisitions["id"].tolist() == rb.acquisitions["id"].tolist()
    pd.testing.assert_frame_equal(ra.rounds.drop(columns=[c for c in ra.rounds if "time" in c]),
                                  rb.rounds.drop(columns=[c for c in rb.rounds if "time" in c]))


# --- hub fetches: one line, what was tried and what to do ----------------------------------------

def test_an_unknown_hf_model_offline_is_one_line_with_the_remedy():
    pytest.importorskip("transformers")
    from toolkit.models import create_model

    with pytest.raises(HubError) as info:
        create_model("hf:nosuch-org/nosuch-model", weights="pretrained", num_classes=2)
    line = _one_line(info.value)
    assert isinstance(info.value, RuntimeError) and "\n" not in str(info.value)
    assert "'nosuch-org/nosuch-model'" in line and "HF_HUB_OFFLINE is set" in line
    assert "model.weights=FOLDER" in line


def test_timm_weights_offline_and_a_bad_open_clip_tag_are_one_line():
    from toolkit.models import create_model

    with pytest.raises(HubError) as info:
        create_model("timm:resnet18", weights="pretrained", num_classes=2)
    line = _one_line(info.value)
    assert "\n" not in str(info.value) and "timm resnet18" in line and "model.weights=PATH" in line
    pytest.importorskip("open_clip")
    with pytest.raises(ModelError, match=r"open_clip has no pretrained tag 'badtag' for ViT-B-32; its tags: openai"):
        create_model("open_clip:ViT-B-32/badtag", weights="pretrained", num_classes=2)


def test_a_hub_fetch_does_not_print_the_hubs_retries(capfd):
    """Without HF_HUB_OFFLINE an unreachable hub logs each retry (with its URL) before failing."""
    pytest.importorskip("huggingface_hub")
    from huggingface_hub.utils import logging as hub_logging

    from toolkit.data.tokenizers import quiet_hub

    retries = hub_logging.get_logger("huggingface_hub.utils._http")
    level = hub_logging.get_logger().level
    with quiet_hub():
        retries.warning("Retrying in 1s [Retry 1/5].")
    assert "Retrying" not in capfd.readouterr().err
    assert hub_logging.get_logger().level == level  # restored


def test_a_tokenizer_folder_that_is_not_there_is_one_line_from_the_cli(tmp_path, capsys):
    pytest.importorskip("transformers")
    path = tmp_path / "t.jsonl"
    pd.DataFrame({"text": ["good", "bad"] * 10, "label": [1, 0] * 10, "attribute": [0, 1, 1, 0] * 5}).to_json(
        path, orient="records", lines=True)
    with pytest.raises(SystemExit) as stop:
        main(["run", "csv-text", "--out", str(tmp_path / "run"), "--set", f"data.params.path={path}",
              "data.params.tokenizer=/nonexistent/folder", "data.params.split_fractions=[0.5,0.25,0.25]",
              f"data.params.cache_dir={tmp_path / 'c'}"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.count("\n") == 0
    assert "data.params.tokenizer='/nonexistent/folder': no such folder" in err and "save_pretrained" in err


# --- unclear messages ---------------------------------------------------------------------------

def test_an_empty_hf_name_says_what_is_missing():
    from toolkit.config import resolve_config
    from toolkit.models import model_spec

    with pytest.raises(ConfigError, match=r"'model.name' got 'hf:', which is incomplete: .* hf:<org>/<name>"):
        resolve_config("toy", ["model.name=hf:"])
    with pytest.raises(ModelError, match="model name 'hf:' is incomplete"):
        model_spec("hf:")


@pytest.mark.parametrize("params,message", [
    ({"resolution": 0}, r"data.params.resolution must be a whole number of pixels >= 1, got 0"),
    ({"resolution": 16, "resize": 8}, r"data.params.resize=8 is smaller than data.params.resolution=16"),
])
def test_a_bad_resolution_names_its_key(tmp_path, params, message):
    root = _images(tmp_path / "d", 12)
    _table(12).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(DataError, match=message):
        create_dataset("csv_images", "train", root=str(root), split_fractions=(1, 0, 0), cache_dir=None, **params)


def test_a_fractional_label_is_named_by_row_and_id(tmp_path):
    rows = _table(12).astype({"label": object})
    rows.loc[5, "label"] = 0.5
    root = _images(tmp_path / "d", 12)
    rows.to_csv(root / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"column 'label' \(the label\) holds \['0.5'\] in rows \[5\] \(ids \[1015\]\); "
                                        r"labels must be whole numbers .* or class names"):
        create_dataset("csv_images", "train", root=str(root), id_column="img_id", matched={0: 0, 1: 1},
                       split_fractions=(1, 0, 0), resolution=8, cache_dir=None)


def test_an_empty_text_names_the_row_and_the_text_column(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"text": ["good", "", "bad", "fine"], "label": [1, 0, 0, 1], "attribute": [0, 1, 0, 1]}).to_csv(
        path, index=False)
    with pytest.raises(DataError, match=r"column 'text' \(the text\) is empty in rows \[1\] \(1 rows\); every row "
                                        r"needs the text") as info:
        create_dataset("csv_text", "train", path=str(path), tokenizer="never-loaded", cache_dir=None)
    assert "image" not in str(info.value)


@pytest.mark.parametrize("name,content,message", [
    ("t.jsonl", "", r"t.jsonl has no rows; expected one JSON object per line"),
    ("t.csv", "text,label,attribute\n", r"t.csv has a header row \(text, label, attribute\) but no rows"),
])
def test_a_table_without_rows_says_so(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        create_dataset("csv_text", "train", path=str(tmp_path / name), tokenizer="never-loaded", cache_dir=None)
