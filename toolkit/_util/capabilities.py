"""What each dataset supports, declared once, torch-free.

The dataset registry (`toolkit.data.registry`) attaches these to its entries, and refuses
to register a loader that declares none; the config and the fidelity table read them
here, so resolving a config (`protocol=paper_code` included) imports neither
`toolkit.data` nor torch. One table, two readers: a new loader cannot miss the paper-code
options silently, because it cannot register without a row here (or its own
`capabilities=` at `register_dataset`, which lands in this table too).
"""
from __future__ import annotations

from dataclasses import dataclass

from toolkit.errors import ConfigError

MODALITIES = ("image", "text")


@dataclass(frozen=True)
class DatasetCapabilities:
    """What a dataset's loader supports, for the options that depend on it.

    Args:
        modality: "image" or "text" (the paper's vision code covers image datasets only).
        crop: the loader takes `crop` ("centre" | "random": the paper code's random 480 crops).
        rare_classes: the loader draws rare classes from `data.params.seed` when
            `data.params.imbalanced` (CIFAR-10's cut classes; the paper code draws them from the run seed).
    """

    modality: str
    crop: bool = False
    rare_classes: bool = False

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")


_IMAGE_CROP = DatasetCapabilities("image", crop=True)

# the built-in loaders' declarations (each loader registers under its name in toolkit.data)
_DECLARED: dict[str, DatasetCapabilities] = {
    "toyworld": DatasetCapabilities("image"),
    "fashion_places": DatasetCapabilities("image"),
    "waterbirds": _IMAGE_CROP,
    "treeperson": _IMAGE_CROP,
    "csv_images": _IMAGE_CROP,
    "cifar10": DatasetCapabilities("image", crop=True, rare_classes=True),
    "iwildcam": _IMAGE_CROP,
    "camelyon17": _IMAGE_CROP,
    "fmow": _IMAGE_CROP,
    "csv_text": DatasetCapabilities("text"),
    "amazon": DatasetCapabilities("text"),
    "spamassassin": DatasetCapabilities("text"),
}


def declare_capabilities(name: str, capabilities: DatasetCapabilities) -> None:
    """Declare (or confirm) what dataset `name` supports; a conflicting redeclaration is refused."""
    if not isinstance(capabilities, DatasetCapabilities):
        raise TypeError(f"dataset {name!r}: capabilities must be a DatasetCapabilities, "
                        f"got {type(capabilities).__name__}")
    old = _DECLARED.get(name)
    if old is not None and old != capabilities:
        raise ValueError(f"dataset {name!r} is declared as {old}; refusing {capabilities}")
    _DECLARED[name] = capabilities


def declared_datasets() -> list[str]:
    """The names with declared capabilities."""
    return sorted(_DECLARED)


def capabilities_of(name: str) -> DatasetCapabilities:
    """The declared capabilities of dataset `name`.

    Examples:
        >>> capabilities_of("cifar10").crop, capabilities_of("amazon").modality
        (True, 'text')
    """
    try:
        return _DECLARED[name]
    except KeyError:
        raise ConfigError(f"dataset {name!r} declares no capabilities (modality, crop, ...), so the options that "
                          f"depend on them cannot be set; known: {', '.join(declared_datasets())}. A new loader "
                          f"declares them with register_dataset(name, capabilities=DatasetCapabilities(...))") from None
