"""The dataset registry: each loader registers beside its definition with `@register_dataset`.

An entry carries the loader, the options it takes (`data.params`) and what the dataset
supports (`DatasetCapabilities`: modality, crop, the paper-code options). The capabilities
live in the torch-free `toolkit._util.capabilities`, so the config and the fidelity table
read the same declaration without importing this package; registering a loader that
declares none is refused.
"""
from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass, fields, is_dataclass
from typing import Callable, Sequence

from toolkit._util.capabilities import DatasetCapabilities, capabilities_of, declare_capabilities
from toolkit.data.base import GroupedDataset
from toolkit.errors import DataError

_NOT_OPTIONS = ("split", "name", "layout")


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset.

    Args:
        name: the registered name (`data.name`).
        loader: `loader(split, **params)` -> GroupedDataset.
        capabilities: what the dataset supports (modality, crop, the paper-code options).
        options_from: where its options are read when not from `loader`'s own signature: a
            function (a thin wrapper's shared loader) or a dataclass (its fields).
    """

    name: str
    loader: Callable
    capabilities: DatasetCapabilities
    options_from: Callable | type | None = None

    @property
    def modality(self) -> str:
        return self.capabilities.modality

    def parameters(self) -> list[str]:
        """The options the loader takes (what `data.params` may hold)."""
        source = self.options_from or self.loader
        extra: list[str] = []
        if is_dataclass(source):  # the loader's **params are the dataclass's fields
            source, extra = self.loader, [f.name for f in fields(source)]
        params = inspect.signature(source).parameters.values()
        return [p.name for p in params
                if p.kind == p.KEYWORD_ONLY
                or (p.kind == p.POSITIONAL_OR_KEYWORD and p.name not in _NOT_OPTIONS)] + extra


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, *, capabilities: DatasetCapabilities | None = None,
                     options_from: Callable | type | None = None) -> Callable[[Callable], Callable]:
    """Register a loader under `name` (a decorator; returns the loader unchanged).

    Args:
        name: the dataset's name (`data.name`).
        capabilities: what it supports; None reads its declaration in
            `toolkit._util.capabilities` (the built-in loaders'); a new loader passes its own.
        options_from: see `DatasetEntry`.

    Examples:
        >>> from toolkit.data.registry import register_dataset, dataset_entry
        >>> dataset_entry("cifar10").capabilities.crop
        True
    """
    def decorate(loader: Callable) -> Callable:
        if name in _DATASETS:
            raise DataError(f"dataset {name!r} is registered twice ({_DATASETS[name].loader} and {loader})")
        if capabilities is not None:
            declare_capabilities(name, capabilities)
        _DATASETS[name] = DatasetEntry(name, loader, capabilities_of(name), options_from)
        return loader

    return decorate


def dataset_entry(name: str) -> DatasetEntry:
    """The registry entry of dataset `name`."""
    if name not in _DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    return _DATASETS[name]


def list_datasets(filter: str | Sequence[str] = "", *, modality: str | None = None) -> list[str]:
    """The registered dataset names, for `create_dataset` and `data.name`.

    Args:
        filter: an fnmatch pattern (or several) on the name, e.g. "csv_*"; "" lists all.
        modality: keep only "image" or "text" datasets.

    Examples:
        >>> from toolkit import list_datasets
        >>> [n for n in list_datasets() if n in ("toyworld", "waterbirds")]
        ['toyworld', 'waterbirds']
        >>> list_datasets(modality="text")
        ['amazon', 'csv_text', 'spamassassin']
    """
    names = sorted(_DATASETS)
    patterns = [filter] if isinstance(filter, str) else list(filter)
    if any(patterns):
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns if p)]
    if modality is not None:
        names = [n for n in names if _DATASETS[n].modality == modality]
    return names


def dataset_parameters(name: str) -> list[str]:
    """The options a dataset's loader takes (what `data.params` may hold)."""
    return dataset_entry(name).parameters()


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
    entry = dataset_entry(name)
    valid = entry.parameters()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise DataError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for dataset {name!r} "
                         f"(data.params); valid: {', '.join(valid)}")
    return entry.loader(split, **params)
