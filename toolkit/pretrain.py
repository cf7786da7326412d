"""Pretraining of the toy backbone on a broad synthetic task (never the downstream split).

The pretraining task uses the same renderer as the toy world but a different question:
which of all 20 shapes is it (not 3 vs 3), on backgrounds of *every* hue (not two
families), plus auxiliary hue-bin, texture and foreground-mask targets. The mask loss
matters: without it the network learns colour first and shape features arrive late,
which weakens the downstream active-learning effect.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data.base import normalize
from .data.render import SHAPES, TEXTURES, render
from .models.toy import ToyResNet


@dataclass(frozen=True)
class PretrainRecipe:
    n_images: int = 40_000
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    hue_bins: int = 8
    aux_weight: float = 0.1    # hue-bin and texture losses, each
    mask_weight: float = 1.0   # foreground-mask loss on 8x8 stage-2 features
    image_size: int = 32
    object_size: tuple = (0.12, 0.36)  # broad: covers the toy world's small objects and more
    seed: int = 1234           # distinct from every toy-world seed stream
    threads: int = 1


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
    shapes = rng.integers(0, len(SHAPES), n)
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


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def pretrain_toy(out: str | Path, recipe: PretrainRecipe | None = None, *, log_every: int = 200) -> dict:
    """Train the toy backbone and save it to `out` (atomically) with its recipe and metrics."""
    recipe = recipe or PretrainRecipe()
    out = Path(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)  # one thread is steadier than two under contention
    try:
        print(f"[pretrain] rendering {recipe.n_images} images for the broad pretraining task", flush=True)
        t0 = time.time()
        images, targets = make_pretraining_data(recipe, recipe.n_images, stream=0)
        held_images, held_targets = make_pretraining_data(recipe, 1000, stream=1)
        torch.manual_seed(recipe.seed)
        model = PretrainHeads(ToyResNet(), recipe.hue_bins)
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, recipe.steps, recipe.warmup_steps))
        gen = torch.Generator().manual_seed(recipe.seed)
        model.train()
        for step in range(recipe.steps):
            idx = torch.randint(0, len(images), (recipe.batch_size,), generator=gen)
            x = normalize(images[idx])
            s, h, t, m = model(x)
            loss = (F.cross_entropy(s, targets["shape"][idx])
                    + recipe.aux_weight * F.cross_entropy(h, targets["hue"][idx])
                    + recipe.aux_weight * F.cross_entropy(t, targets["texture"][idx])
                    + recipe.mask_weight * F.binary_cross_entropy_with_logits(m, targets["mask"][idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if log_every and (step + 1) % log_every == 0:
                print(f"[pretrain] step {step + 1}/{recipe.steps} loss {loss.item():.3f} "
                      f"({time.time() - t0:.0f}s)", flush=True)
        model.eval()
        with torch.inference_mode():
            s, h, t, _ = model(normalize(held_images))
        metrics = {
            "heldout_shape_acc": float((s.argmax(1) == held_targets["shape"]).float().mean()),
            "heldout_hue_acc": float((h.argmax(1) == held_targets["hue"]).float().mean()),
            "heldout_texture_acc": float((t.argmax(1) == held_targets["texture"]).float().mean()),
            "seconds": round(time.time() - t0, 1),
        }
        print(f"[pretrain] done: {metrics}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        torch.save({"backbone": model.backbone.state_dict(), "recipe": asdict(recipe), "metrics": metrics}, tmp)
        os.replace(tmp, out)
        out.with_suffix(".json").write_text(json.dumps({"recipe": asdict(recipe), "metrics": metrics}, indent=2))
        return metrics
    finally:
        torch.set_num_threads(threads)


def ensure_toy_backbone(path: str | Path | None = None) -> Path:
    """The cached toy backbone, pretrained once (with both cores of a laptop) if missing."""
    from .models import TOY_CHECKPOINT

    path = Path(path or TOY_CHECKPOINT)
    if not path.exists():
        print(f"[pretrain] no toy backbone at {path}: pretraining it once (a few minutes)", flush=True)
        pretrain_toy(path, PretrainRecipe(threads=min(2, os.cpu_count() or 1)))
    return path
