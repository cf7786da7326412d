"""Models: `create_model(name, weights=..., num_classes=...)` -> Classifier.

The face of the package, re-exports only, as timm's: the registry (`registry`: specs,
`register_model`, `list_models`, `model_spec`), the registered models (registered beside
their definitions: `toy`, `zoo`, `text`), and the builder (`build`: `Classifier`,
`create_model`; `weights`: checked weight loading).
"""
from __future__ import annotations

from toolkit.models import text, toy, zoo  # noqa: F401 (each registers its models)
from toolkit.models.build import Classifier, create_model
from toolkit.models.registry import (
    MODELS,
    NAME_FORMS,
    BuiltModel,
    ClipModel,
    ModelSpec,
    TextModel,
    TimmModel,
    list_models,
    model_spec,
    register_model,
    register_spec,
)
from toolkit.models.weights import load_backbone_weights, load_npz_checked, weights_digest

# the re-exported functions' examples, for doctest.testmod(toolkit.models)
__test__ = {"create_model": create_model, "list_models": list_models, "model_spec": model_spec,
            "register_model": register_model}

__all__ = ["MODELS", "NAME_FORMS", "BuiltModel", "Classifier", "ClipModel", "ModelSpec", "TextModel", "TimmModel",
           "create_model", "list_models", "load_backbone_weights", "load_npz_checked", "model_spec", "register_model",
           "register_spec", "weights_digest"]
