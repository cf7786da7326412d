"""Procedural renderer of the toy world: a shape on a textured, two-toned background.

Everything is vectorised over a batch of images: per-image parameters are arrays of
shape (B, 1, 1) broadcast against a (H, W) pixel grid. Shapes are signed-distance
functions, so edges are anti-aliased for free (alpha = clip(0.5 - sdf / pixel)).

The renderer knows nothing about labels or spurious correlations; `toyworld.py` and
`pretrain.py` decide which shapes and hues to draw.
"""
from __future__ import annotations

import numpy as np

from toolkit.errors import DataError

SHAPES = (
    "circle", "square", "triangle", "ring", "bowtie", "plus", "star", "hexagon",
    "u_shape", "ellipse", "half_disc", "l_shape", "t_shape", "crescent",
    "hollow_square", "bar", "arrow", "flower", "two_dots", "gear",
)
TEXTURES = ("stripes", "checker", "blobs", "waves", "dots", "gradient")
# Hue families of the background (HSV hue in [0, 1)): the spurious attribute.
LAND_HUES = (0.12, 0.30)   # yellow-green
WATER_HUES = (0.48, 0.64)  # cyan-blue


def _box(u, v, hx, hy):
    qx, qy = np.abs(u) - hx, np.abs(v) - hy
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _shape_sdf(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (approximate for polar shapes) of a unit-sized shape; < 0 inside."""
    r = np.hypot(u, v)
    th = np.arctan2(v, u)
    if kind == "circle":
        return r - 0.85
    if kind == "square":
        return _box(u, v, 0.75, 0.75)
    if kind == "triangle":
        k = np.sqrt(3.0)
        x, y = np.abs(u), v + 0.3
        return np.maximum(k * 0.5 * x + 0.5 * y, -y) - 0.55
    if kind == "ring":
        return np.abs(r - 0.65) - 0.22
    if kind == "bowtie":  # two triangles meeting at their tips
        return np.maximum(np.abs(v) - 0.9 * np.abs(u) - 0.08, np.abs(u) - 0.9)
    if kind == "plus":
        return np.minimum(_box(u, v, 0.9, 0.22), _box(u, v, 0.22, 0.9))
    if kind == "star":
        return r - (0.5 + 0.4 * np.cos(5 * th))
    if kind == "hexagon":
        ang = np.pi / 3
        sector = np.mod(th, ang) - ang / 2
        return r * np.cos(sector) - 0.75
    if kind == "u_shape":
        return np.maximum(np.abs(np.hypot(u, np.minimum(v, 0.0)) - 0.6) - 0.22, v - 0.7)
    if kind == "ellipse":  # elongated beyond a circle's aspect jitter
        return np.hypot(u / 0.95, v / 0.42) - 1.0
    if kind == "half_disc":
        return np.maximum(r - 0.9, -(v + 0.2))
    if kind == "l_shape":
        return np.minimum(_box(u + 0.45, v, 0.22, 0.85), _box(u, v - 0.63, 0.67, 0.22))
    if kind == "t_shape":
        return np.minimum(_box(u, v + 0.6, 0.85, 0.22), _box(u, v + 0.1, 0.22, 0.8))
    if kind == "crescent":
        return np.maximum(r - 0.85, -(np.hypot(u - 0.4, v) - 0.7))
    if kind == "hollow_square":
        return np.maximum(_box(u, v, 0.8, 0.8), -_box(u, v, 0.45, 0.45))
    if kind == "bar":
        return _box(u, v, 0.95, 0.25)
    if kind == "arrow":
        head = np.maximum(np.abs(v) * 0.9 + (u - 0.9), -(u - 0.1))
        return np.minimum(head, _box(u + 0.35, v, 0.5, 0.15))
    if kind == "flower":
        return r - (0.45 + 0.45 * np.abs(np.cos(2 * th)))
    if kind == "two_dots":
        return np.minimum(np.hypot(u - 0.5, v), np.hypot(u + 0.5, v)) - 0.38
    if kind == "gear":
        return r - (0.68 + 0.17 * np.sign(np.cos(8 * th)))
    raise DataError(f"unknown shape {kind!r}; valid shapes: {', '.join(SHAPES)}")


def _texture(kind_ids: np.ndarray, xx, yy, rng: np.random.Generator) -> np.ndarray:
    """Per-image pattern in [0, 1] for texture indices `kind_ids` (B,)."""
    b = len(kind_ids)
    theta = rng.uniform(0, np.pi, (b, 1, 1))
    freq = rng.uniform(0.25, 0.9, (b, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (b, 1, 1))
    a = xx * np.cos(theta) + yy * np.sin(theta)
    c = -xx * np.sin(theta) + yy * np.cos(theta)
    out = np.empty((b,) + xx.shape[-2:], dtype=np.float64)
    for t, name in enumerate(TEXTURES):
        m = kind_ids == t
        if not m.any():
            continue
        A, C, F, P = a[m], c[m], freq[m], phase[m]
        if name == "stripes":
            pat = np.sin(F * A + P)
        elif name == "checker":
            pat = np.sin(F * A + P) * np.sin(F * C)
        elif name == "blobs":
            g = rng.normal(size=(m.sum(), 3, 4))
            pat = sum(np.sin(0.3 * F * (g[:, i, 0, None, None] * A + g[:, i, 1, None, None] * C) + 6 * g[:, i, 2, None, None])
                      for i in range(3))
        elif name == "waves":
            pat = np.sin(F * A + 2.0 * np.sin(0.5 * F * C) + P)
        elif name == "dots":
            pat = np.sin(F * A + P) * np.sin(F * C + P) - 0.3
        else:  # gradient
            pat = A / 16.0 + 0.3 * np.sin(P)
        out[m] = pat
    return 1.0 / (1.0 + np.exp(-4.0 * out))  # soft threshold to two tones


def hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB; inputs broadcast, output has a trailing axis of 3."""
    h = np.mod(h, 1.0)
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = np.zeros(np.broadcast(h, s, v).shape + (3,))
    for k, (r, g, b) in enumerate(table):
        m = i == k
        for ch, val in enumerate((r, g, b)):
            rgb[..., ch] = np.where(m, val, rgb[..., ch])
    return rgb


def render(
    shape_ids: np.ndarray,
    hues: np.ndarray,
    texture_ids: np.ndarray,
    rng: np.random.Generator,
    *,
    image_size: int = 32,
    nuisance: float = 1.0,
    object_size: tuple[float, float] = (0.24, 0.36),
) -> tuple[np.ndarray, np.ndarray]:
    """Render a batch of images.

    Args:
        shape_ids: (B,) indices into SHAPES.
        hues: (B,) background base hue in [0, 1).
        texture_ids: (B,) indices into TEXTURES.
        rng: source of all nuisance variation.
        image_size: side length in pixels.
        nuisance: 0 = centred, upright, clean objects; 1 = the default variation.
        object_size: range of the object's half-size as a fraction of the image side.

    Returns:
        images: (B, image_size, image_size, 3) uint8.
        masks: (B, image_size, image_size) float32 foreground alpha in [0, 1].
    """
    b = len(shape_ids)
    s = image_size
    grid = np.arange(s) - (s - 1) / 2.0
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    xx, yy = xx[None], yy[None]

    # Background: two tones of one hue family, mixed by a texture pattern.
    hue = hues[:, None, None]
    s1, v1 = rng.uniform(0.45, 0.9, (b, 1, 1)), rng.uniform(0.35, 0.95, (b, 1, 1))
    s2 = np.clip(s1 + rng.uniform(-0.3, 0.3, (b, 1, 1)), 0.2, 1.0)
    v2 = np.clip(v1 + rng.choice([-1, 1], (b, 1, 1)) * rng.uniform(0.15, 0.35, (b, 1, 1)), 0.15, 1.0)
    dh = rng.uniform(-0.03, 0.03, (b, 1, 1))
    pat = _texture(texture_ids, xx, yy, rng)[..., None]
    bg = hsv_to_rgb(hue, s1, v1) * pat + hsv_to_rgb(hue + dh, s2, v2) * (1 - pat)

    # Clutter discs: small distractors of random colour.
    n_clutter = rng.poisson(1.5 * nuisance, b)
    for k in range(int(n_clutter.max(initial=0))):
        on = (n_clutter > k)[:, None, None]
        cx, cy = rng.uniform(-s / 2, s / 2, (2, b, 1, 1))
        rad = rng.uniform(0.8, 2.0, (b, 1, 1)) * s / 32
        a = np.clip(rad - np.hypot(xx - cx, yy - cy) + 0.5, 0, 1) * on
        col = hsv_to_rgb(rng.uniform(0, 1, (b, 1, 1)), rng.uniform(0, 1, (b, 1, 1)), rng.uniform(0, 1, (b, 1, 1)))
        bg = bg * (1 - a[..., None]) + col * a[..., None]

    # Foreground: a shape in its own rotated, scaled, shifted frame.
    scale = s * rng.uniform(object_size[0], object_size[1], (b, 1, 1))
    aspect = np.exp(0.2 * nuisance * rng.uniform(-1, 1, (b, 1, 1)))
    rot = nuisance * rng.uniform(-np.pi, np.pi, (b, 1, 1))
    shift = nuisance * s * 0.15
    cx, cy = rng.uniform(-shift, shift, (2, b, 1, 1)) if shift > 0 else (0.0, 0.0)
    dx, dy = xx - cx, yy - cy
    u = (dx * np.cos(rot) + dy * np.sin(rot)) / (scale * aspect)
    v = (-dx * np.sin(rot) + dy * np.cos(rot)) / (scale / aspect)
    sdf = np.empty((b, s, s))
    for k, name in enumerate(SHAPES):
        m = shape_ids == k
        if m.any():
            sdf[m] = _shape_sdf(name, u[m], v[m])
    alpha = np.clip(0.5 - sdf * scale, 0.0, 1.0)

    # Object colour contrasts in value with the background, with a hue unrelated to it.
    bg_value = bg.max(axis=-1).mean(axis=(1, 2))[:, None, None]
    dark = bg_value > 0.55
    fv = np.where(dark, rng.uniform(0.02, 0.3, (b, 1, 1)), rng.uniform(0.75, 1.0, (b, 1, 1)))
    fg = hsv_to_rgb(rng.uniform(0, 1, (b, 1, 1)), rng.uniform(0.0, 0.8, (b, 1, 1)), fv)
    img = bg * (1 - alpha[..., None]) + fg * alpha[..., None]

    # Photometric jitter and sensor noise.
    contrast = 1 + 0.2 * nuisance * rng.uniform(-1, 1, (b, 1, 1, 1))
    bright = 0.08 * nuisance * rng.uniform(-1, 1, (b, 1, 1, 1))
    img = (img - 0.5) * contrast + 0.5 + bright
    img = img + rng.normal(0, 0.03 * nuisance, img.shape)
    images = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return images, alpha.astype(np.float32)
