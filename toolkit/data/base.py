"""The grouped dataset: inputs, labels, stable ids, and an attribute table for metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import torch

from toolkit.errors import DataError


@dataclass
class GroupedDataset:
    """A dataset with a group attribute table: images (in memory or streamed from files),
    or token ids for text (`TextDataset`).

    Attributes:
        name: dataset name as registered.
        split: "train", "val", "test", or a release's own split name.
        images: (N, 3, H, W) uint8 tensor, or a lazy source indexed the same way
            (`image_files.FileImages`, for pools too big for memory).
        attributes: DataFrame indexed by the stable integer id (same order as `images`),
            with the label column and the group attributes.
        label_column: name of the label column in `attributes`.
        spurious_column: the attribute that is spuriously correlated with the label; a
            group is (label, spurious). None when the dataset has no such attribute.
        class_names: human-readable names, one per class.
        params: everything that produced the data (goes into fingerprints and records).
        input_size: if set, `get_batch` resizes images to this side length (bilinear).
        train_crop, train_size: BiT's train transform, as the paper's code runs it: training
            batches are resized to `train_size` (None: as stored) and then cut to a random
            `train_crop` window, while evaluation and scoring resize the whole image to
            `input_size`. None (the default): training sees what evaluation sees (images
            stored centre-cropped), and finetuning augments by translation instead.
        group_columns: further attributes whose composition the analyses can report
            (recorded with every acquired example; e.g. Amazon's product category).
        extra_metrics: names in `metrics.EXTRA_METRICS` computed on every evaluation
            (e.g. iWildCam's macro F1, Amazon's 10th-percentile reviewer accuracy).
        matched: whether "label == spurious" means a matched example; False for a grouping
            whose attribute values are not paired with labels (no mismatched metrics).
    """

    name: str
    split: str
    images: torch.Tensor
    attributes: pd.DataFrame
    label_column: str = "y"
    spurious_column: str | None = None
    class_names: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)
    input_size: int | None = None  # resize batches on the fly (e.g. CIFAR's 32 px to BiT's 128)
    train_crop: int | None = None
    train_size: int | None = None
    group_columns: tuple[str, ...] = ()
    extra_metrics: tuple[str, ...] = ()
    # label == spurious marks a matched example (Waterbirds: waterbird on water); False where the
    # attribute is not declared matched with the label: no "mismatched" groups or metrics then
    matched: bool = True

    def __post_init__(self) -> None:
        if len(self.images) != len(self.attributes):
            raise DataError(
                f"{self.name}/{self.split}: {len(self.images)} images but "
                f"{len(self.attributes)} attribute rows; they must match one to one"
            )
        missing = {self.label_column, self.spurious_column, *self.group_columns} - set(self.attributes.columns) - {None}
        if missing:
            raise DataError(
                f"{self.name}/{self.split}: attribute table lacks column(s) {sorted(missing)}; "
                f"it has {list(self.attributes.columns)}"
            )
        labels = self.attributes[self.label_column].to_numpy()
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise DataError(
                f"{self.name}/{self.split}: labels must lie in [0, {self.num_classes - 1}], "
                f"found range [{labels.min()}, {labels.max()}]"
            )

    def content_digest(self) -> str:
        """A digest of what the split *is*: its name, params (file-based loaders put a digest of
        their files there), ids and attribute table (labels and groups). Runs record it and
        refuse to resume on data that changed."""
        import hashlib
        import json

        h = hashlib.sha256(json.dumps({"name": self.name, "split": self.split,
                                       "params": {k: v for k, v in self.params.items() if k != "cache_dir"}},
                                      sort_keys=True, default=str).encode())
        h.update(np.asarray(self.ids, dtype=np.int64).tobytes())
        h.update(pd.util.hash_pandas_object(self.attributes, index=False).to_numpy().tobytes())
        return h.hexdigest()[:16]

    def __getstate__(self) -> dict:
        # loaders (finetune._loader) hold worker processes: never pickled with the data
        return {k: v for k, v in self.__dict__.items() if k != "_loaders"}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def ids(self) -> np.ndarray:
        return self.attributes.index.to_numpy()

    @cached_property
    def labels(self) -> np.ndarray:
        # cached: get_batch reads it for every micro-batch of the finetuning loop
        return self.attributes[self.label_column].to_numpy().astype(np.int64)

    @cached_property
    def _labels_tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.labels)

    @property
    def groups(self) -> np.ndarray | None:
        """Group index label * n_values(spurious) + spurious, or None without a spurious column."""
        if self.spurious_column is None:
            return None
        sp = self.attributes[self.spurious_column].to_numpy().astype(np.int64)
        return self.labels * (int(sp.max(initial=0)) + 1) + sp

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return normalize(self.images[i]), int(self.labels[i]), int(self.ids[i])

    def get_batch(self, positions: np.ndarray | torch.Tensor, device: torch.device | str | None = None, *,
                  train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float inputs and int64 labels at row positions (not ids).

        With a `device`, the uint8 images travel there first (4x fewer bytes than float32)
        and are normalised and resized on it; the numbers equal the CPU path's. `train`:
        a training batch, sized for its random crop (see `train_crop`)."""
        pos = torch.as_tensor(np.asarray(positions), dtype=torch.long)
        x, y = self.images[pos], self._labels_tensor[pos]
        if device is not None:
            x, y = to_device(x, device), to_device(y, device)
        return self.prepare(x, train=train), y

    def prepare(self, images_uint8: torch.Tensor, *, train: bool = False) -> torch.Tensor:
        """uint8 batch -> the model's float input, on whatever device the batch is."""
        x = normalize(images_uint8)
        size = (self.train_size if train and self.train_crop is not None else self.input_size)
        if size is not None and x.shape[-1] != size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x

    def raw_batch(self, positions: np.ndarray) -> torch.Tensor:
        """uint8 images at `positions`: what loader workers produce (see finetune.iterate_batches)."""
        return self.images[torch.as_tensor(np.asarray(positions), dtype=torch.long)]


@dataclass
class TextDataset(GroupedDataset):
    """Text as padded token ids: `images` holds an (N, L) int32 tensor of token ids, padded
    with `pad_id`; batches become {"input_ids", "attention_mask"} trimmed to their longest
    row, which text backbones take in place of an image tensor."""

    pad_id: int = 1

    def __getitem__(self, i: int):
        return self.prepare(self.trim(self.images[i:i + 1])), int(self.labels[i]), int(self.ids[i])

    def get_batch(self, positions, device=None, *, train: bool = False):
        """As `GroupedDataset.get_batch`, trimmed on the host before the copy: the trim length
        read from a CUDA tensor would wait for the device on every batch."""
        pos = torch.as_tensor(np.asarray(positions), dtype=torch.long)
        x, y = self.trim(self.images[pos]), self._labels_tensor[pos]
        if device is not None:
            x, y = to_device(x, device), to_device(y, device)
        return self.prepare(x, train=train), y

    def raw_batch(self, positions: np.ndarray) -> torch.Tensor:
        return self.trim(super().raw_batch(positions))

    def trim(self, tokens: torch.Tensor) -> torch.Tensor:
        """Cut the padding columns after the batch's longest row (on the host)."""
        length = max(1, int((tokens != self.pad_id).sum(1).max())) if len(tokens) else 1
        return tokens[:, :length]

    def prepare(self, tokens: torch.Tensor, *, train: bool = False) -> dict[str, torch.Tensor]:
        """Token ids, already trimmed (`trim`), -> the model's inputs; no host read."""
        return {"input_ids": tokens.long(), "attention_mask": (tokens != self.pad_id).long()}


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Copy to `device`; from CPU to CUDA through pinned memory, so the copy is asynchronous."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the BiT convention."""
    return images_uint8.float().div_(127.5).sub_(1.0)
