"""Dataset registry: `create_dataset(name, split, **params)` returns a GroupedDataset."""
from __future__ import annotations

from functools import partial
from typing import Callable

from toolkit.data.base import GroupedDataset, normalize
from toolkit.data.cifar import load_cifar10
from toolkit.data.csv_images import load_csv_images
from toolkit.data.csv_text import load_csv_text
from toolkit.data.fashion_mnist import load_fashion_places
from toolkit.data.metadata_images import load_metadata_images, load_treeperson, load_waterbirds
from toolkit.data.toyworld import load_toyworld
from toolkit.data.wilds_data import SPECS as _WILDS
from toolkit.data.wilds_data import load_wilds
from toolkit.errors import DataError

_REGISTRY: dict[str, Callable[..., GroupedDataset]] = {
    "toyworld": load_toyworld,
    "waterbirds": load_waterbirds,
    "treeperson": load_treeperson,
    "cifar10": load_cifar10,
    "fashion_places": load_fashion_places,
    "csv_images": load_csv_images,
    "csv_text": load_csv_text,
    **{name: partial(load_wilds, name) for name in _WILDS},
}


def list_datasets() -> list[str]:
    """The registered dataset names, for `create_dataset` and `data.name`.

    Examples:
        >>> from toolkit import list_datasets
        >>> [n for n in list_datasets() if n in ("toyworld", "waterbirds")]
        ['toyworld', 'waterbirds']
    """
    return sorted(_REGISTRY)


def create_dataset(name: str, split: str, **params) -> GroupedDataset:
    """Build one split of a registered dataset.

    Args:
        name: a registered name (`list_datasets()`).
        split: "train" (the pool), "val" or "test" (the dataset's own names for others).
        **params: the dataset's own options (`dataset_parameters(name)` lists them; in a
            config they are `data.params`). Unknown options are refused.

    Returns:
        A `GroupedDataset`: images (or tokens), labels, stable ids, and an attribute table
        with the label and the group attributes (e.g. the spurious `place`).

    Examples:
        >>> import toolkit
        >>> ds = toolkit.create_dataset("toyworld", "test", n_train=240, n_val=40, n_test=160)
        >>> len(ds), ds.num_classes, ds.label_column, ds.spurious_column
        (160, 2, 'y', 'place')
    """
    if name not in _REGISTRY:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    valid = dataset_parameters(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise DataError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for dataset {name!r} "
                         f"(data.params); valid: {', '.join(valid)}")
    return _REGISTRY[name](split, **params)


def dataset_parameters(name: str) -> list[str]:
    """The options a dataset's loader takes (what `data.params` may hold)."""
    import inspect

    if name == "toyworld":  # its options are ToyWorldParams' fields
        from dataclasses import fields

        from toolkit.data.toyworld import ToyWorldParams

        return ["cache_dir", *(f.name for f in fields(ToyWorldParams))]
    loader = _REGISTRY[name]
    if name in ("waterbirds", "treeperson"):  # thin wrappers over the shared metadata loader
        loader = load_metadata_images
    params = inspect.signature(loader).parameters.values()
    return [p.name for p in params
            if p.kind == p.KEYWORD_ONLY or (p.kind == p.POSITIONAL_OR_KEYWORD and p.name not in ("split", "name", "layout"))]


__all__ = ["GroupedDataset", "create_dataset", "list_datasets", "normalize"]
