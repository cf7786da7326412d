"""The experiments' protocol constants, in one place.

The probe demo, the robustness suite and the dose-response study share the probe protocol
below; the full-finetuning demo takes its protocol from the `toy` preset.
"""
from __future__ import annotations

from toolkit.report.tables import FINAL_METRICS, TOY_LEGEND  # noqa: F401  (the tables' defaults)

WEIGHTS = ("pretrained", "random")
STRATEGIES = ("least_confidence", "random")
ARMS = [(w, s) for w in WEIGHTS for s in STRATEGIES]

# probe mode on the toy world: a 4,000-image pool, 40 seed labels, 5 per round to 100
PROBE_POOL = {"n_train": 4000, "n_test": 1000}
PROBE_AL = {"seed_size": 40, "per_round": 5, "budget": 60}

# the real-image world: a real ImageNet network on composites of real photographs, rendered at
# the network's own input size (timm's data config: 224); the full-finetuning preset uses 64 px
REAL = {"model": "efficientnet_lite0", "dataset": "fashion_places", "data": {"size": 224},
        "legend": "(groups: y0=footwear, y1=tops; s0=natural photo, s1=built scene; mismatched = y0_s1 and y1_s0)"}


def arm_short(weights: str) -> str:
    """Run-name prefix of a weights kind: "pre" or "unpre"."""
    return "pre" if weights == "pretrained" else "unpre"
