"""`csv_text`: text examples from a table (CSV, JSON lines or parquet) with a label and the
attributes that define the groups (MultiNLI with negation words, CivilComments with identity
mentions, a user's own corpus). Tokenised once with the model's tokenizer and cached by
content; the table's formats, checks and grouping are `toolkit.data.tables`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from toolkit._util.paths import default_dir
from toolkit.data.base import TextDataset
from toolkit.data.image_files import save_array_atomic
from toolkit.data.registry import register_dataset
from toolkit.data.tables import canonical_rows, column, grouped_rows, read_table
from toolkit.errors import DataError


@register_dataset("csv_text")
def load_csv_text(split: str, *, path: str | Path, tokenizer: str, text_column: str = "text",
                  label_column: str = "label", attributes: Sequence[str] = ("attribute",),
                  matched: Mapping | None = None, id_column: str | None = None, split_column: str | None = None,
                  split_values: Mapping | None = None, split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
                  split_seed: int = 0, max_length: int = 128,
                  cache_dir: str | Path | None = "auto") -> TextDataset:
    """One split of a text table, as padded token ids.

    Args:
        split: "train" (the pool), "val" or "test".
        path: the table: .csv (separator sniffed), .jsonl or .parquet.
        tokenizer: a transformers tokenizer (hub id, or a folder saved with save_pretrained);
            use the model's own, e.g. the folder you pass as model.weights.
        text_column: the example's text.
        label_column, attributes, matched, id_column, split_column, split_values,
        split_fractions, split_seed: as for `csv_images`.
        max_length: tokens per example (longer texts are truncated).
    """
    from toolkit.data.tokenizers import load_tokenizer

    path = Path(path)
    meta, table_bytes = canonical_rows(read_table(path), path, id_column)
    texts = column(meta, path, text_column, "the text")
    rows = grouped_rows(meta, path, split, label_column=label_column, attributes=attributes, matched=matched,
                        id_column=id_column, split_column=split_column, split_values=split_values,
                        split_fractions=split_fractions, split_seed=split_seed)
    if max_length < 2:
        raise DataError(f"max_length must be >= 2 tokens, got {max_length}")
    content = hashlib.sha256(table_bytes).hexdigest()[:16]
    params = {"path": str(path.resolve()), "tokenizer": str(tokenizer), "text_column": text_column, **rows.params,
              "max_length": max_length, "content": content}
    tok = load_tokenizer(str(tokenizer))
    fp = hashlib.sha256(json.dumps({**params, "split": split, "vocab": len(tok)}, sort_keys=True,
                                   default=str).encode()).hexdigest()[:16]
    cache_dir = default_dir(cache_dir, "datasets")
    cache = Path(cache_dir) / "csv_text" / f"{split}-{fp}.npy" if cache_dir is not None else None
    if cache is not None and cache.exists():
        ids = np.load(cache)
    else:
        ids = tok(texts.to_numpy()[rows.rows].tolist(), truncation=True, max_length=max_length,
                  padding="max_length", return_tensors="np")["input_ids"].astype(np.int32)
        if cache is not None:
            save_array_atomic(cache, ids)
    return TextDataset(name="csv_text", split=split, images=torch.from_numpy(ids), attributes=rows.table,
                       label_column=label_column, spurious_column=rows.spurious_column, class_names=rows.class_names,
                       params=params, group_columns=rows.group_columns, matched=rows.matched, pad_id=tok.pad_token_id)
