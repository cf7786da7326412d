"""Tiny copies of the WILDS releases, written in their exact on-disk formats (what the
`wilds` package's loaders read), and a tiny RoBERTa with a tokenizer trained on the fly."""
from __future__ import annotations

import csv

import numpy as np
import pandas as pd
from PIL import Image

_RNG_SEED = 0


def _image(path, colour, rng, size=(40, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.clip(np.full((*size, 3), colour) + rng.integers(-20, 20, (*size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)


def make_iwildcam(root, n_classes=3, per_split={"train": 24, "val": 8, "test": 8, "id_val": 4, "id_test": 4}):
    base = root / "iwildcam_v2.0"
    rng = np.random.default_rng(_RNG_SEED)
    rows, i = [], 0
    for split, n in per_split.items():
        for _ in range(n):
            y = i % n_classes
            fname = f"{i:08x}.jpg"
            _image(base / "train" / fname, [60 + 80 * y, 120, 200 - 60 * y], rng)
            rows.append({"split": split, "filename": fname, "y": y, "location_remapped": i % 4,
                         "sequence_remapped": i, "datetime": f"2013-06-{1 + i % 28:02d} 08:{i % 60:02d}:00.000"})
            i += 1
    pd.DataFrame(rows).to_csv(base / "metadata.csv", index=False)
    pd.DataFrame({"y": range(n_classes), "category_id": [10 * c for c in range(n_classes)],
                  "name": ["empty", "tayassu pecari", "dasyprocta punctata"][:n_classes]}).to_csv(
        base / "categories.csv", index=False)
    (base / "RELEASE_v2.0.txt").write_text("")
    return root


def make_camelyon17(root, per_center=12):
    base = root / "camelyon17_v1.0"
    rng = np.random.default_rng(_RNG_SEED)
    rows = []
    for center in range(5):
        for k in range(per_center):
            patient, node, x, y_coord = f"{center:03d}", k % 2, 100 + k, 200 + k
            tumor = k % 2
            # train (0) / id_val (1) for centers 0, 3, 4; the loader moves centers 1 and 2 to val / test
            split = 1 if (center in (0, 3, 4) and k % 6 == 5) else 0
            _image(base / "patches" / f"patient_{patient}_node_{node}" /
                   f"patch_patient_{patient}_node_{node}_x_{x}_y_{y_coord}.png", [200, 100 + 100 * tumor, 180], rng,
                   size=(24, 24))
            rows.append({"patient": patient, "node": node, "x_coord": x, "y_coord": y_coord, "tumor": tumor,
                         "slide": center * 2 + node, "center": center, "split": split})
    pd.DataFrame(rows).to_csv(base / "metadata.csv")  # the release's first column is an unnamed index
    (base / "RELEASE_v1.0.txt").write_text("")
    return root


def make_fmow(root, categories=("airport", "barn", "dam")):
    base = root / "fmow_v1.1"
    rng = np.random.default_rng(_RNG_SEED)
    rows = []
    years = {"train": "2012", "val": "2014", "test": "2017", "seq": "2011"}
    plan = [("train", "train", 24), ("val", "val", 6), ("test", "test", 6), ("val", "val_ood", 6),
            ("test", "test_ood", 6), ("seq", "seq", 3)]
    i = 0
    for split, kind, n in plan:
        year = {"val_ood": "2014", "test_ood": "2017"}.get(kind, "2012" if split != "seq" else years["seq"])
        for k in range(n):
            cat = categories[k % len(categories)]
            _image(base / "images" / f"rgb_img_{i}.png", [50 + 60 * (k % 3), 150, 90], rng)
            rows.append({"split": split, "img_filename": f"rgb_img_{i}.png", "img_path": f"x/{i}.jpg",
                         "spatial_reference": "WGS84", "epsg": 4326, "category": cat, "visible": True,
                         "img_width": 40, "img_height": 40, "country_code": ["USA", "FRA", "KEN"][k % 3],
                         "cloud_cover": 0, "timestamp": f"{year}-05-0{1 + k % 9}T10:00:00Z",
                         "lat": 0.0, "lon": 0.0})
            i += 1
    pd.DataFrame(rows).to_csv(base / "rgb_metadata.csv", index=False)
    pd.DataFrame({"alpha-3": ["USA", "FRA", "KEN"], "region": ["Americas", "Europe", "Africa"]}).to_csv(
        base / "country_code_mapping.csv", index=False)
    (base / "RELEASE_v1.1.txt").write_text("")
    return root


_WORDS = {0: "awful broken refund terrible waste", 1: "poor disappointing flimsy", 2: "okay average fine",
          3: "good solid nice", 4: "excellent perfect love wonderful"}


def make_amazon(root, per_split={0: 30, 1: 10, 2: 10, 3: 10, 4: 10}):
    """reviews.csv and splits/user.csv; split codes: 0 train, 1 val, 2 id_val, 3 test, 4 id_test, -1 unused."""
    base = root / "amazon_v2.1"
    (base / "splits").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(_RNG_SEED)
    reviews, splits, i = [], [], 0
    for split, n in [*per_split.items(), (-1, 3)]:
        for _ in range(n):
            stars = i % 5 + 1
            text = " ".join(rng.permutation((_WORDS[stars - 1] + " the product item it was").split()))
            reviews.append({"reviewerID": f"U{(i // 2) % 12}" if split >= 0 else "Ux", "asin": f"B{i % 7}",
                            "reviewTime": "01 1, 2015", "unixReviewTime": 1420070400 + i, "reviewText": text,
                            "summary": text[:10], "verified": True, "category": ["Books", "Toys", "Music"][i % 3],
                            "reviewYear": 2015, "overall": float(stars)})
            splits.append(split)
            i += 1
    pd.DataFrame(reviews).to_csv(base / "reviews.csv", index=False, quoting=csv.QUOTE_NONNUMERIC)
    pd.DataFrame({"split": splits}).to_csv(base / "splits" / "user.csv", index=False)
    (base / "RELEASE_v2.1.txt").write_text("")
    return root


def make_tiny_roberta(folder):
    """A 2-layer RoBERTa with a byte-level BPE tokenizer trained on the fly, saved the way
    `save_pretrained` writes a hub model (what model.weights / data.params.tokenizer take)."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    texts = [" ".join(_WORDS.values())] * 4 + ["the product item it was"] * 4
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    from tokenizers.processors import RobertaProcessing

    bpe.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>",
                                  model_max_length=64)
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=80, pad_token_id=tok.pad_token_id)
    RobertaModel(cfg, add_pooling_layer=False).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
