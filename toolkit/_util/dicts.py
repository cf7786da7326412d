"""Nested-mapping helpers for configs and overrides."""
from __future__ import annotations


def deep_update(base: dict, update: dict) -> dict:
    """A copy of `base` with `update` merged in, mapping by mapping (neither is changed)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
