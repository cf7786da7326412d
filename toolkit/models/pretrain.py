"""Pretraining of the toy backbone on a broad synthetic task (never the downstream split).

The pretraining task uses the same renderer as the toy world but a different question:
which of all 20 shapes is it (not 3 vs 3), on backgrounds of *every* hue (not two
families), at every object size the toy world uses and larger, plus auxiliary hue-bin,
texture and foreground-mask targets. The mask loss matters: without it the network
learns colour first and shape features arrive late, which weakens the downstream
active-learning effect. Random quarter-turns and mirrors multiply the rendered images
for free (objects appear at every rotation anyway).

What bought the held-out accuracy (2 cores, 32 px; toy world v1 reached 59%, v2 90%): a
stride-2 last stage (1.4x images/s, and it learned faster), batch 128 with Adam 3e-3, the
dihedral views, 20 shapes without rotation duplicates, and objects of 0.12-0.30 of the
image side instead of 0.12-0.36. Small objects stay the hard part: at 0.12-0.15 a probe
on a good backbone tells the shapes apart ~70% of the time. The README has the numbers.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toolkit._util.atomic import atomic_path
from toolkit._util.locks import exclusive
from toolkit._util.log import info
from toolkit._util.paths import cache_path, shown
from toolkit._util.progress import progress
from toolkit.data.base import normalize
from toolkit.data.render import SHAPES, TEXTURES, render
from toolkit.data.toyworld import ToyWorldParams
from toolkit.errors import ModelError
from toolkit.models.toy import DEFAULT_WIDTH, ToyResNet, toy_widths


@dataclass(frozen=True)
class PretrainRecipe:
    n_images: int = 40_000
    steps: int = 1700
    batch_size: int = 128
    lr: float = 3e-3
    warmup_steps: int = 100
    hue_bins: int = 8
    hue_weight: float = 0.1    # 1.0 delayed shape learning: 30% held-out shape accuracy at step 1000 of 1500
    texture_weight: float = 0.1
    mask_weight: float = 1.0   # foreground-mask loss on 8x8 stage-2 features
    image_size: int = 32
    object_size: tuple = (0.12, 0.30)  # covers the toy world's small objects, (0.12, 0.18), and larger ones
    dihedral: bool = True      # random quarter-turns and mirrors of each training image
    seed: int = 1234           # distinct from every toy-world seed stream
    threads: int = 1
    shapes: tuple | None = None  # concept coverage: pretrain on these shape indices only (None: all 20)
    width: int = DEFAULT_WIDTH  # the backbone's stem channels (`toy_widths`): the width axis of the dose study


class PretrainHeads(nn.Module):
    def __init__(self, backbone: ToyResNet, hue_bins: int) -> None:
        super().__init__()
        self.backbone = backbone
        d = backbone.num_features
        self.shape = nn.Linear(d, len(SHAPES))
        self.hue = nn.Linear(d, hue_bins)
        self.texture = nn.Linear(d, len(TEXTURES))
        self.mask = nn.Conv2d(backbone.stage2_channels, 1, 1)

    def forward(self, x):
        last, mid = self.backbone.forward_stages(x)
        emb = F.relu(self.backbone.final_norm(last)).mean(dim=(2, 3))
        return self.shape(emb), self.hue(emb), self.texture(emb), self.mask(mid)[:, 0]


def make_pretraining_data(recipe: PretrainRecipe, n: int, stream: int):
    """Images (n, 3, H, W) uint8 and targets: shape, hue bin, texture, 8x8 mask."""
    rng = np.random.default_rng([recipe.seed, stream])
    shapes = (rng.integers(0, len(SHAPES), n) if recipe.shapes is None
              else np.asarray(recipe.shapes)[rng.integers(0, len(recipe.shapes), n)])
    hues = rng.uniform(0, 1, n)
    textures = rng.integers(0, len(TEXTURES), n)
    imgs, masks = [], []
    for i in range(0, n, 1000):
        im, al = render(shapes[i:i + 1000], hues[i:i + 1000], textures[i:i + 1000], rng,
                        image_size=recipe.image_size, object_size=recipe.object_size)
        imgs.append(im)
        pool = recipe.image_size // 8
        masks.append(al.reshape(len(al), 8, pool, 8, pool).mean(axis=(2, 4)))
    images = torch.from_numpy(np.concatenate(imgs).transpose(0, 3, 1, 2).copy())
    hue_bin = np.floor(hues * recipe.hue_bins).astype(np.int64)
    return images, {
        "shape": torch.from_numpy(shapes), "hue": torch.from_numpy(hue_bin),
        "texture": torch.from_numpy(textures), "mask": torch.from_numpy(np.concatenate(masks)),
    }


def dihedral(x: torch.Tensor, mask: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random quarter-turn and mirror per image (and its mask): objects are drawn at every
    rotation, so these are free extra views of the same labels."""
    k = torch.randint(0, 4, (len(x),), generator=gen)
    flip = torch.randint(0, 2, (len(x),), generator=gen).bool()
    x, mask = x.clone(), mask.clone()
    for q in range(1, 4):
        sel = k == q
        x[sel], mask[sel] = torch.rot90(x[sel], q, (2, 3)), torch.rot90(mask[sel], q, (1, 2))
    x[flip], mask[flip] = x[flip].flip(3), mask[flip].flip(2)
    return x, mask


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def pretrain_toy(out: str | Path | None, recipe: PretrainRecipe | None = None, *, log_every: int = 200,
                 save_steps: tuple = (), stop_after: int | None = None) -> dict:
    """Train the toy backbone and save it to `out` (atomically) with its recipe and metrics.

    `save_steps`: also save the backbone after each of these steps (0 = the initial weights)
    as `step_checkpoint(out, step)`, at no extra cost: the pretraining-dose axis. `stop_after`:
    stop once that many steps are done (the schedule is still the full recipe's, so each
    checkpoint is the full run's); `out` is then not written (None is allowed)."""
    recipe = recipe or PretrainRecipe()
    out = Path(out) if out is not None else None
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)  # one thread is steadier than two under contention
    try:
        info(f"[pretrain] rendering {recipe.n_images} images for the broad pretraining task")
        t0 = time.time()
        images, targets = make_pretraining_data(recipe, recipe.n_images, stream=0)
        held_images, held_targets = make_pretraining_data(recipe, 1000, stream=1)
        # the same task at the toy world's object sizes only (its default `object_size`)
        small = replace(recipe, object_size=ToyWorldParams().object_size)
        small_images, small_targets = make_pretraining_data(small, 1000, stream=2)
        torch.manual_seed(recipe.seed)
        # channels_last: ~25% more images per second on CPU for these convolutions
        model = PretrainHeads(ToyResNet(toy_widths(recipe.width)), recipe.hue_bins)
        model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, recipe.steps, recipe.warmup_steps))
        gen = torch.Generator().manual_seed(recipe.seed)
        model.train()
        dose_out = out if out is not None else toy_checkpoint()
        if 0 in save_steps:
            _save_backbone(model, recipe, {"step": 0}, step_checkpoint(dose_out, 0))
        last = recipe.steps if stop_after is None else min(stop_after, recipe.steps)
        for step in progress(range(last), desc="pretrain toy backbone", unit="step"):
            idx = torch.randint(0, len(images), (recipe.batch_size,), generator=gen)
            x, mask = images[idx], targets["mask"][idx]
            if recipe.dihedral:
                x, mask = dihedral(x, mask, gen)  # on uint8: a quarter of the bytes to move
            s, h, t, m = model(normalize(x).contiguous(memory_format=torch.channels_last))
            loss = (F.cross_entropy(s, targets["shape"][idx])
                    + recipe.hue_weight * F.cross_entropy(h, targets["hue"][idx])
                    + recipe.texture_weight * F.cross_entropy(t, targets["texture"][idx])
                    + recipe.mask_weight * F.binary_cross_entropy_with_logits(m, mask))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step + 1 in save_steps:
                _save_backbone(model, recipe, {"step": step + 1}, step_checkpoint(dose_out, step + 1))
            if log_every and (step + 1) % log_every == 0:
                model.eval()
                with torch.inference_mode():
                    acc = (model(normalize(held_images[:500]))[0].argmax(1) == held_targets["shape"][:500]).float().mean()
                model.train()
                info(f"[pretrain] step {step + 1}/{recipe.steps} loss {loss.item():.3f} held-out shape accuracy "
                      f"{float(acc):.3f} ({time.time() - t0:.0f}s)")
        if out is None:
            return {"steps": last}
        model.eval()
        with torch.inference_mode():
            s, h, t, _ = model(normalize(held_images))
            s_small = model(normalize(small_images))[0]
        metrics = {
            "heldout_shape_acc": float((s.argmax(1) == held_targets["shape"]).float().mean()),
            "heldout_shape_acc_toyworld_sizes": float((s_small.argmax(1) == small_targets["shape"]).float().mean()),
            "heldout_hue_acc": float((h.argmax(1) == held_targets["hue"]).float().mean()),
            "heldout_texture_acc": float((t.argmax(1) == held_targets["texture"]).float().mean()),
            "seconds": round(time.time() - t0, 1),
        }
        info(f"[pretrain] done: {metrics}")
        _save_backbone(model, recipe, metrics, out)
        out.with_suffix(".json").write_text(json.dumps({"recipe": asdict(recipe), "metrics": metrics}, indent=2))
        return metrics
    finally:
        torch.set_num_threads(threads)


def _save_backbone(model: PretrainHeads, recipe: PretrainRecipe, metrics: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save({"backbone": model.backbone.state_dict(), "architecture": model.backbone.architecture(),
                    "recipe": asdict(recipe), "metrics": metrics}, tmp)


# The pretraining dose (issue #22): checkpoints along the one pretraining run, and backbones
# pretrained on fewer images or fewer shapes. Each is a weights id of toy_resnet.
DOSE_STEPS = (0, 100, 200, 400, 800, 1000, 1200, 1400)  # saved by the default pretraining; its last step is "pretrained"
COVERAGE_SEED = 99  # which shapes a coverage backbone sees: the first K of one fixed permutation


def step_checkpoint(final: Path, step: int) -> Path:
    return final.with_name(f"{final.stem}@step{step}.pt")


def coverage_shapes(k: int) -> tuple[int, ...]:
    """The shape indices a `pretrained@shapesK` backbone is pretrained on (sorted)."""
    if not 1 <= k <= len(SHAPES):
        raise ModelError(f"pretrained@shapes{k}: the coverage must be 1-{len(SHAPES)} shapes")
    return tuple(sorted(int(i) for i in np.random.default_rng(COVERAGE_SEED).permutation(len(SHAPES))[:k]))


def parse_dose(weights: str) -> tuple[str, int]:
    """"pretrained@step400" -> ("step", 400); also "images", "shapes", "width"."""
    import re

    m = re.fullmatch(r"pretrained@(step|images|shapes|width)(\d+)", weights)
    if not m:
        raise ModelError(f"unknown toy_resnet weights id {weights!r}; the dose ids are pretrained@stepN "
                         f"(N in {', '.join(map(str, DOSE_STEPS))} or any step up to {PretrainRecipe().steps}), "
                         f"pretrained@imagesN (pretrained on N images), pretrained@shapesK (on K of the 20 shapes) and "
                         f"pretrained@widthW (a backbone with W stem channels; the default is {DEFAULT_WIDTH})")
    return m.group(1), int(m.group(2))


def ensure_toy_dose(weights: str) -> Path:
    """The checkpoint of a dose id, pretrained (deterministically) and cached on first use."""
    axis, value = parse_dose(weights)
    final = toy_checkpoint()
    default = PretrainRecipe(threads=min(2, os.cpu_count() or 1))
    if axis == "step":
        if value > default.steps:
            raise ModelError(f"{weights}: the pretraining has {default.steps} steps")
        if value == default.steps:
            return ensure_toy_backbone()
        path = step_checkpoint(final, value)
        if not path.exists():
            _refuse_in_tests(path)
            info(f"[pretrain] {weights}: replaying the pretraining to step {value} (saving the dose checkpoints)")
            pretrain_toy(None, default, save_steps=tuple(s for s in DOSE_STEPS if s <= value) + (value,),
                         stop_after=value)
        return path
    if axis == "width" and value == DEFAULT_WIDTH:
        return ensure_toy_backbone()  # the default backbone is this width
    path = final.with_name(f"{final.stem}@{axis}{value}.pt")
    if not path.exists():
        _refuse_in_tests(path)
        if axis == "width":
            toy_widths(value)  # a width no GroupNorm fits is refused before minutes of pretraining
        recipe = {"images": lambda: replace(default, n_images=value), "width": lambda: replace(default, width=value),
                  "shapes": lambda: replace(default, shapes=coverage_shapes(value))}[axis]()
        what = f"{value} stem channels wide" if axis == "width" else f"on {value} {axis}"
        _pretrain_once(path, f"[pretrain] {weights}: pretraining a backbone {what} (a few minutes, once)",
                       lambda: pretrain_toy(path, recipe))
    return path


def _pretrain_once(path: Path, message: str, pretrain) -> None:
    """Run `pretrain` unless `path` exists, under a lock on it: a second process that asks for
    the same backbone (a notebook beside a study) waits for the first instead of pretraining it
    again, then finds it."""
    with exclusive(path, "pretraining a toy backbone", wait=info):
        if not path.exists():
            info(message)
            pretrain()


def ensure_toy_doses(weights: list[str]) -> None:
    """Every dose in `weights` cached; the missing step doses come from one replay of the
    pretraining (to the largest step asked for), not one replay each."""
    final = toy_checkpoint()
    steps = sorted({v for axis, v in (parse_dose(w) for w in weights if w.startswith("pretrained@")) if axis == "step"})
    missing = [s for s in steps if s < PretrainRecipe().steps and not step_checkpoint(final, s).exists()]
    if missing:
        _refuse_in_tests(step_checkpoint(final, missing[-1]))
        info(f"[pretrain] replaying the pretraining to step {missing[-1]} for the dose checkpoints {missing}")
        pretrain_toy(None, PretrainRecipe(threads=min(2, os.cpu_count() or 1)), save_steps=tuple(missing),
                     stop_after=missing[-1])
    for w in weights:
        if w == "pretrained":
            ensure_toy_backbone()
        elif w.startswith("pretrained@"):
            ensure_toy_dose(w)


def _refuse_in_tests(path: Path) -> None:
    if os.environ.get("ALTK_NO_PRETRAIN"):
        raise RuntimeError(f"no toy backbone at {path}, and ALTK_NO_PRETRAIN is set (the test suite sets it so "
                           f"that no test pretrains the real backbone for minutes); install one there first")


def toy_checkpoint() -> Path:
    """Where the pretrained toy backbone lives: `<cache root>/toy_backbone/toy_resnet-v2.pt`
    (v2: stride-2 last stage, 20 distinct shapes). See `toolkit._util.paths`."""
    return cache_path("toy_backbone", "toy_resnet-v2.pt")


def ensure_toy_backbone(path: str | Path | None = None) -> Path:
    """The cached toy backbone, pretrained once (with both cores of a laptop) if missing."""
    path = Path(path or toy_checkpoint())
    if not path.exists() and os.environ.get("ALTK_NO_PRETRAIN"):
        raise RuntimeError(f"no toy backbone at {path}, and ALTK_NO_PRETRAIN is set (the test suite sets it so "
                           f"that no test pretrains the real backbone for minutes); install one there first")
    if not path.exists():
        _pretrain_once(path, f"[pretrain] no toy backbone at {shown(path)}: pretraining it once (a few minutes)",
                       lambda: pretrain_toy(path, PretrainRecipe(threads=min(2, os.cpu_count() or 1)),
                                            save_steps=DOSE_STEPS if path == toy_checkpoint() else ()))
    return path
