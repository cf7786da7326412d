"""Datasets: `create_dataset(name, split, **params)` returns a GroupedDataset.

Each loader registers beside its definition (`@register_dataset` in
`toolkit.data.registry`); importing this package imports every loader module, so the
registry is complete. This module only re-exports.
"""
from __future__ import annotations

from functools import partial

from toolkit.data import (  # noqa: F401 (registers)
    cifar,
    csv_images,
    csv_text,
    fashion_mnist,
    metadata_images,
    spamassassin,
    toyworld,
)
from toolkit.data.base import GroupedDataset, normalize
from toolkit.data.registry import (
    DatasetEntry,
    create_dataset,
    dataset_entry,
    dataset_parameters,
    list_datasets,
    register_dataset,
)
from toolkit.data.wilds_data import SPECS as WILDS_SPECS
from toolkit.data.wilds_data import load_wilds

# the WILDS datasets share one loader, registered once per release
for _name in WILDS_SPECS:
    register_dataset(_name)(partial(load_wilds, _name))
del _name

# the re-exported functions' examples, for doctest.testmod(toolkit.data)
__test__ = {"create_dataset": create_dataset, "list_datasets": list_datasets}

__all__ = ["DatasetEntry", "GroupedDataset", "create_dataset", "dataset_entry", "dataset_parameters", "list_datasets",
           "normalize", "register_dataset"]
