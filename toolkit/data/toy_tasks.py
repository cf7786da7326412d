"""The toy world's task family: seeded draws of what the world *is*.

A task fixes which shapes make each label, which background hues make each place, how
strongly the background predicts the label, and how rare the minority class is. Every
field goes into the dataset's params, so into every fingerprint.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from toolkit.data.render import SHAPES
from toolkit.errors import DataError


@dataclass(frozen=True)
class Task:
    """One toy-world task: everything here goes into the dataset's params (and fingerprints)."""

    name: str
    label_shapes: tuple
    place_hues: tuple
    matched_fraction: float
    minority_fraction: float
    seed: int

    def data_params(self) -> dict:
        return {"label_shapes": [list(f) for f in self.label_shapes], "place_hues": [list(h) for h in self.place_hues],
                "matched_fraction": self.matched_fraction, "minority_fraction": self.minority_fraction,
                "seed": self.seed}

    def overrides(self) -> list[str]:
        """`--set` overrides that select this task in any toy-world preset."""
        return [f"data.params.{k}={json.dumps(v)}" for k, v in self.data_params().items()]


def draw_tasks(k: int, *, seed: int = 0, family_size: int = 3, matched: tuple = (0.90, 0.97),
               minority: tuple = (0.20, 0.35), hue_width: tuple = (0.10, 0.18), min_hue_gap: float = 0.08,
               shapes: tuple[str, ...] | None = None) -> list[Task]:
    """K tasks from a seeded distribution. Task i depends only on (seed, i), so the first 5
    of 20 tasks are the 5 tasks of K = 5, and any one can be re-drawn alone.

    Each task: two disjoint label families of `family_size` shapes from all 20; two
    disjoint hue intervals of width in `hue_width`, at least `min_hue_gap` apart on the hue
    circle; a matched fraction and a minority fraction drawn uniformly; a world seed.

    Args:
        k: how many tasks (>= 1).
        seed: the distribution's seed; tasks are named "t<seed>-<i>" ("t0-00", "t0-01", ...).
        family_size: shapes per label family (default 3; two families, disjoint, so at most
            half of the 20 shapes).
        matched: the (low, high) range of the matched fraction, the share of the training
            pool whose background matches its label (default 0.90 to 0.97).
        minority: the (low, high) range of the minority class's share of the training pool
            (default 0.20 to 0.35).
        hue_width: the (low, high) range of each place's hue interval width, in HSV hue units
            (an interval may pass 1: hues wrap around).
        min_hue_gap: the least distance between the two hue intervals, both ways round the
            hue circle (default 0.08).
        shapes: draw the label families from these shapes only (default: all 20). Everything
            else about task i (hues, fractions, world seed) is the same whichever shapes are
            given, so two restrictions of one distribution give pairs of tasks that differ
            only in their shapes (the dose study's coverage design uses this).

    Returns:
        The k `Task`s, in order: each has `data_params()` (the toy world's `data.params`) and
        `overrides()` (`--set` strings that select it in any toy-world preset).

    Raises:
        DataError: k < 1, two families do not fit in the shapes, or a shape is unknown.

    Examples:
        >>> from toolkit.data.toy_tasks import draw_tasks
        >>> tasks = draw_tasks(3, seed=0)
        >>> [t.name for t in tasks], tasks[0].label_shapes
        (['t0-00', 't0-01', 't0-02'], (('plus', 'triangle', 'u_shape'), ('gear', 'square', 'star')))
        >>> tasks[0].matched_fraction, tasks[0].minority_fraction
        (0.955, 0.327)
        >>> draw_tasks(1, seed=0)[0] == tasks[0]  # task i depends on (seed, i) only
        True
        >>> tasks[0].overrides()[1]
        'data.params.place_hues=[[0.177, 0.33], [0.772, 0.907]]'
    """
    pool = tuple(SHAPES) if shapes is None else tuple(shapes)
    unknown = sorted(set(pool) - set(SHAPES))
    if unknown or len(set(pool)) != len(pool):
        raise DataError(f"draw_tasks: shapes must be distinct names among {', '.join(SHAPES)}; got "
                        f"{'unknown ' + ', '.join(unknown) if unknown else 'a repeated name'}")
    if k < 1 or 2 * family_size > len(pool):
        raise DataError(f"draw_tasks: need k >= 1 and 2 x family_size <= {len(pool)} (the shapes to draw from), "
                         f"got k={k}, family_size={family_size}")
    tasks = []
    for i in range(k):
        rng = np.random.default_rng([seed, i, 7919])
        # one permutation of all 20 whatever `shapes` is, so the draws after it do not depend on it
        drawn = [SHAPES[j] for j in rng.permutation(len(SHAPES)) if SHAPES[j] in pool][:2 * family_size]
        w0, w1 = rng.uniform(*hue_width, 2)
        lo0 = rng.uniform(0, 1)
        gap = rng.uniform(min_hue_gap, 1 - w0 - w1 - min_hue_gap)  # the gap on the other side stays >= min
        lo1 = (lo0 + w0 + gap) % 1.0
        hues = ((round(lo0, 3), round(lo0 + w0, 3)), (round(lo1, 3), round(lo1 + w1, 3)))
        tasks.append(Task(
            name=f"t{seed}-{i:02d}",
            label_shapes=(tuple(sorted(drawn[:family_size])), tuple(sorted(drawn[family_size:]))),
            place_hues=hues,
            matched_fraction=round(float(rng.uniform(*matched)), 3),
            minority_fraction=round(float(rng.uniform(*minority)), 3),
            seed=int(rng.integers(1, 2**31 - 1)),
        ))
    return tasks
