"""Built-in synthetic "latent-factor worlds": datasets that need no download.

Why this design: the method under study only helps when the CF vectors learned
from interactions carry label information that the pixels carry weakly.  Each
world therefore has one hidden latent vector ``z_i`` per item that drives all
three observable channels:

* **labels** are a deterministic function of ``z`` (scores ``z . w_j``):
  every item gets one primary label by a capacity-constrained argmax, extra
  labels go to the best-scoring remaining items, so class sizes hit a
  long-tailed target with a set Gini index and average positives exactly;
* **interactions**: users have latent tastes ``u``; each user samples items
  without replacement with probability ``softmax(beta * u . z / sqrt(d) + pop)``
  (a log-normal popularity skew), so a CF model recovers (a rotation of) ``z``;
* **images** are rendered procedurally from a nonlinear (tanh) function of a
  *noisy projection of* ``z``'s first ``pixel_dims`` dims (background/shape
  colour, shape size/roundness/position, stripe texture), then clutter blobs, a
  strong random per-channel colour cast and pixel noise that carry nothing.  The
  cast makes absolute colour - the most salient cue - unreliable, so a model
  fitted to a few labels latches onto nuisance, while dense supervision
  can teach it the cast-invariant cues (colour relations, shape, texture).

So pixels predict labels only partly and noisily, a few labels are not enough
to learn the mapping, but the CF vectors of every train item (labelled or not)
teach the image model to read the latent from the pixels - the paper's
mechanism.  Shuffling
CF vectors across items destroys that signal.

Every world is a frozen :class:`WorldSpec`; the spec is stored in
``meta.json`` ``params`` so a dataset documents how it was made.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from raysearch.data.format import write_dataset
from raysearch.data.registry import register_dataset

#: bump when the generator changes the produced data for an unchanged spec
GENERATOR_VERSION = 2  # 2: per-channel colour cast (was: one brightness gain)


@dataclass(frozen=True)
class WorldSpec:
    """Parameters of one latent-factor world (one preset = one instance)."""

    n_items: int
    n_users: int
    n_labels: int
    avg_pos_labels: float = 1.5      # exact: sum of class sizes / n_items (1.0 = single-label)
    gini: float = 0.5                # target Gini index of class sizes
    min_class_size: int = 4          # tail classes never drop below this (splits need >= 2)
    interactions_per_item: float = 20.0  # mean; density = this / n_users
    latent_dim: int = 6
    pixel_dims: int = 5              # how many latent dims the renderer sees (the rest: CF only)
    pixel_noise: float = 0.3         # std of noise added to the visible latent before rendering
    clutter: int = 2                 # distracting blobs per image (independent of z)
    illumination: float = 0.5        # per-channel colour-cast gain U(1 -+ this): nuisance (see render)
    image_size: int = 32
    affinity: float = 4.0            # beta: how strongly tastes (vs popularity) drive interactions
    popularity_skew: float = 0.7     # std of the log-popularity of items
    user_activity_skew: float = 0.6  # std of the log-activity of users
    min_item_interactions: int = 3   # like the public dumps' k-core filters: no item without users
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_items < 3 or self.n_users < 1 or self.n_labels < 1:
            raise ValueError("WorldSpec: n_items >= 3, n_users >= 1 and n_labels >= 1 required")
        if not 1.0 <= self.avg_pos_labels <= self.n_labels:
            raise ValueError(f"WorldSpec: avg_pos_labels must be in [1, n_labels], got {self.avg_pos_labels}")
        if not 0 <= self.gini < 1:
            raise ValueError(f"WorldSpec: gini must be in [0, 1), got {self.gini}")
        if not 0 < self.pixel_dims <= self.latent_dim:
            raise ValueError("WorldSpec: pixel_dims must be in (0, latent_dim]")
        if self.min_class_size * self.n_labels > self.avg_pos_labels * self.n_items:
            raise ValueError("WorldSpec: min_class_size * n_labels exceeds the total number of labels")
        if self.min_item_interactions < 0:
            raise ValueError("WorldSpec: min_item_interactions must be >= 0")
        if self.interactions_per_item <= 0 or self.image_size < 8:
            raise ValueError("WorldSpec: interactions_per_item > 0 and image_size >= 8 required")

    @property
    def single_label(self) -> bool:
        return self.avg_pos_labels == 1.0


# ----------------------------------------------------------------------------- labels

def class_sizes(n_items: int, n_labels: int, avg_pos: float, gini_target: float, min_size: int) -> np.ndarray:
    """Power-law class sizes (descending) summing to ``round(avg_pos * n_items)`` with the target Gini.

    The exponent is found by bisection; sizes are capped at ``n_items`` (a label
    cannot have more items than exist) and floored at ``min_size``.
    """
    from raysearch.data.format import gini

    total = int(round(avg_pos * n_items))
    cap = n_items if avg_pos > 1 else total

    def sizes(a: float) -> np.ndarray:
        w = (np.arange(1, n_labels + 1, dtype=np.float64)) ** (-a)
        # water-filling: scale c so that sum(clip(c * w, min_size, cap)) == total
        lo_c, hi_c = 0.0, float(total) / w[-1] + 1.0
        for _ in range(60):
            c = (lo_c + hi_c) / 2
            if np.clip(c * w, min_size, cap).sum() < total:
                lo_c = c
            else:
                hi_c = c
        s = np.floor(np.clip(hi_c * w, min_size, cap)).astype(np.int64)
        diff = total - int(s.sum())
        for k in range(n_labels):  # hand the rounding remainder to the head, within bounds
            if diff == 0:
                break
            step = min(diff, cap - s[k]) if diff > 0 else -min(-diff, s[k] - min_size)
            s[k] += step
            diff -= step
        return np.sort(s)[::-1]

    lo, hi = 0.0, 6.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if gini(sizes(mid)) < gini_target:
            lo = mid
        else:
            hi = mid
    return sizes((lo + hi) / 2)


def assign_labels(scores: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Bool (n_items, n_labels) with column sums exactly ``sizes`` and >= 1 label per item.

    Primary labels: a capacity-constrained argmax (each unassigned item proposes
    its best non-full class; classes accept their best proposals).  Extra labels
    (when ``sizes.sum() > n_items``) go to the best-scoring items not yet in the class.
    """
    n, L = scores.shape
    total = int(sizes.sum())
    # primary capacities proportional to sizes, summing to n, never above the class size
    share = sizes * (n / total)
    cap = np.minimum(np.floor(share).astype(np.int64), sizes)
    rest = n - int(cap.sum())
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    for k in order:
        if rest == 0:
            break
        if cap[k] < sizes[k]:
            cap[k] += 1
            rest -= 1
    assert rest == 0, "class sizes cannot cover every item"
    y = np.zeros((n, L), dtype=bool)
    assigned = np.full(n, -1, dtype=np.int64)
    remaining = cap.copy()
    while (assigned < 0).any():
        un = np.flatnonzero(assigned < 0)
        s = scores[un].copy()
        s[:, remaining <= 0] = -np.inf
        best = np.argmax(s, axis=1)
        for j in np.unique(best):
            cand = un[best == j]
            take = cand[np.argsort(-scores[cand, j], kind="stable")[: remaining[j]]]
            assigned[take] = j
            remaining[j] -= len(take)
    y[np.arange(n), assigned] = True
    extra = sizes - cap
    for j in np.flatnonzero(extra > 0):
        s = np.where(y[:, j], -np.inf, scores[:, j])
        y[np.argsort(-s, kind="stable")[: extra[j]], j] = True
    return y


# ----------------------------------------------------------------------------- images

N_RENDER_PARAMS = 13


def render(params: np.ndarray, size: int, rng: np.random.Generator, clutter: int,
           illumination: float = 0.5) -> np.ndarray:
    """Render uint8 (n, size, size, 3) images from render parameters in [-1, 1].

    Parameters: 0-2 background RGB, 3-5 shape RGB, 6 shape radius, 7 roundness
    (L_q ball from diamond through circle to square), 8-9 centre offset,
    10 stripe angle, 11 stripe frequency, 12 stripe contrast.  Then ``clutter``
    random blobs, a random per-channel colour cast (gain in ``1 +- illumination``) and
    pixel noise (all independent of z).
    """
    n = len(params)
    lin = ((np.arange(size) + 0.5) / size * 2 - 1).astype(np.float32)
    yy, xx = np.meshgrid(lin, lin, indexing="ij")
    p = params.astype(np.float32)[:, :, None, None]
    bg = 0.5 + 0.35 * p[:, 0:3]
    fg = 0.5 + 0.45 * p[:, 3:6]
    radius = 0.45 + 0.18 * p[:, 6:7]
    q = np.exp(np.log(2.0) + 1.1 * p[:, 7:8])
    dx = xx[None, None] - 0.25 * p[:, 8:9]
    dy = yy[None, None] - 0.25 * p[:, 9:10]
    dist = (np.abs(dx) ** q + np.abs(dy) ** q) ** (1.0 / q)
    mask = 1.0 / (1.0 + np.exp((dist - radius) * (6.0 * size / 16)))
    theta = np.pi * p[:, 10:11]
    freq = 1.5 + 1.25 * (p[:, 11:12] + 1)
    stripes = 0.5 + 0.5 * np.sin(np.pi * freq * (dx * np.cos(theta) + dy * np.sin(theta)))
    contrast = 0.15 + 0.3 * (p[:, 12:13] + 1) / 2
    fgt = fg * (1 - contrast + contrast * stripes)
    img = bg * (1 - mask) + fgt * mask  # (n, 3, S, S)
    for _ in range(clutter):
        c = rng.uniform(0, 1, size=(n, 3, 1, 1)).astype(np.float32)
        cx = rng.uniform(-1, 1, size=(n, 1, 1, 1)).astype(np.float32)
        cy = rng.uniform(-1, 1, size=(n, 1, 1, 1)).astype(np.float32)
        r = rng.uniform(0.08, 0.25, size=(n, 1, 1, 1)).astype(np.float32)
        # separable Gaussian: exp(-dx^2) * exp(-dy^2) costs O(S) per blob instead of O(S^2)
        a = 0.7 * np.exp(-((xx[0] - cx) ** 2) / (2 * r**2)) * np.exp(-((yy[:, :1] - cy) ** 2) / (2 * r**2))
        img = img * (1 - a) + c * a
    # colour cast: an independent gain per channel, so absolute colour is nuisance and only the
    # colour *relations* (shape vs background, stripes) carry z reliably
    img = img * rng.uniform(1 - illumination, 1 + illumination, size=(n, 3, 1, 1)).astype(np.float32)
    img += rng.standard_normal(size=img.shape, dtype=np.float32) * np.float32(0.04)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


# ----------------------------------------------------------------------------- the world

@dataclass
class World:
    """Everything generated for a spec, including the hidden truth (for analysis/tests)."""

    spec: WorldSpec
    z: np.ndarray             # (n_items, latent_dim) hidden item latents
    labels: np.ndarray        # bool (n_items, n_labels), column j = label j (descending size)
    users: np.ndarray         # (n_users, latent_dim) hidden tastes
    interactions: np.ndarray  # int64 (n, 2): user index, item index
    render_params: np.ndarray  # (n_items, N_RENDER_PARAMS) in [-1, 1]


def generate(spec: WorldSpec) -> World:
    """Sample the world (no images rendered yet; see :func:`render`)."""
    ss = np.random.SeedSequence([spec.seed, GENERATOR_VERSION])
    r_z, r_lab, r_pix, r_usr, r_int = (np.random.default_rng(s) for s in ss.spawn(5))
    d = spec.latent_dim
    z = r_z.standard_normal((spec.n_items, d))

    w = r_lab.standard_normal((d, spec.n_labels))
    w /= np.linalg.norm(w, axis=0, keepdims=True)
    sizes = class_sizes(spec.n_items, spec.n_labels, spec.avg_pos_labels, spec.gini, spec.min_class_size)
    labels = assign_labels(z @ w, sizes)

    vis = z[:, : spec.pixel_dims] + spec.pixel_noise * r_pix.standard_normal((spec.n_items, spec.pixel_dims))
    proj = r_pix.standard_normal((spec.pixel_dims, N_RENDER_PARAMS)) / np.sqrt(spec.pixel_dims)
    render_params = np.tanh(1.2 * vis @ proj)

    users = r_usr.standard_normal((spec.n_users, d))
    n_total = spec.interactions_per_item * spec.n_items
    act = np.exp(spec.user_activity_skew * r_usr.standard_normal(spec.n_users))
    per_user = np.clip(np.round(act / act.sum() * n_total), 1, spec.n_items).astype(np.int64)
    log_pop = spec.popularity_skew * r_int.standard_normal(spec.n_items)
    rows = []
    chunk = max(1, 2_000_000 // spec.n_items)
    for s in range(0, spec.n_users, chunk):
        u = users[s : s + chunk]
        logits = spec.affinity * (u @ z.T) / np.sqrt(d) + log_pop
        # Gumbel top-k == sampling without replacement proportional to softmax(logits)
        keys = logits + r_int.gumbel(size=logits.shape)
        order = _top_k_desc(keys, int(per_user[s : s + chunk].max()))
        for k, row in enumerate(order):
            items = row[: per_user[s + k]]
            rows.append(np.stack([np.full(len(items), s + k), items], axis=1))
    inter = np.concatenate(rows).astype(np.int64)
    inter = _top_up_items(inter, z, users, spec, r_int)
    return World(spec, z, labels, users, inter, render_params)


def _top_k_desc(keys: np.ndarray, k: int) -> np.ndarray:
    """Per row, the column indices of the ``k`` largest keys, largest first: the first ``k`` columns of
    ``np.argsort(-keys, axis=1)`` (equal for distinct keys, as continuous Gumbel keys are) at O(columns)
    per row instead of O(columns log columns): a full sort of every user's row of item keys made
    generation the dominant, super-linear cost of large worlds."""
    k = max(1, min(k, keys.shape[1]))
    if k == keys.shape[1]:
        return np.argsort(-keys, axis=1)
    part = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    return np.take_along_axis(part, np.argsort(-np.take_along_axis(keys, part, axis=1), axis=1), axis=1)


def _top_up_items(inter: np.ndarray, z: np.ndarray, users: np.ndarray, spec: WorldSpec,
                  rng: np.random.Generator) -> np.ndarray:
    """Give every item at least ``min_item_interactions`` users, drawn by the same affinity model
    (the public dumps are k-core filtered; an item nobody touched would have no CF vector)."""
    k = min(spec.min_item_interactions, spec.n_users)
    counts = np.bincount(inter[:, 1], minlength=spec.n_items)
    short = np.flatnonzero(counts < k)
    if len(short) == 0:
        return inter
    have = {(int(u), int(i)) for u, i in inter[np.isin(inter[:, 1], short)]}
    logits = spec.affinity * (z[short] @ users.T) / np.sqrt(spec.latent_dim)
    keys = logits + rng.gumbel(size=logits.shape)
    extra = []
    # at most counts[i] of an item's best users already have it, so its top k users hold the `need` new ones
    order = _top_k_desc(keys, k)
    for row, i in enumerate(short):
        need = k - counts[i]
        for u in order[row]:
            if need == 0:
                break
            if (int(u), int(i)) not in have:
                extra.append((u, i))
                need -= 1
    return np.concatenate([inter, np.asarray(extra, dtype=np.int64).reshape(-1, 2)])


def _label_names(spec: WorldSpec) -> list[str]:
    return [f"c{j:03d}" for j in range(spec.n_labels)]


def render_tag(spec: WorldSpec) -> str:
    """Short hash of the spec and generator version (stored in meta.json, part of image paths)."""
    return hashlib.sha256(
        json.dumps([dataclasses.asdict(spec), GENERATOR_VERSION], sort_keys=True).encode()
    ).hexdigest()[:8]


def is_current(name: str, meta: dict) -> bool:
    """Whether a generated folder's meta.json matches the preset's current spec and generator.

    Lets ``load_dataset`` regenerate a built-in world cached by an older version instead of
    silently serving stale data.
    """
    if name not in PRESETS:
        return True
    return (meta.get("params") or {}).get("render_tag") == render_tag(PRESETS[name][0])


def build_world(spec: WorldSpec, out_dir: Path, *, name: str) -> Path:
    """Generate ``spec`` and write the canonical folder (PNG images under ``images/``)."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    world = generate(spec)
    # the render tag is part of every image path, so the content fingerprint (which hashes
    # paths, not pixels) changes whenever the spec or the renderer does: caches never go stale
    tag = render_tag(spec)
    img_dir = out_dir / "images" / tag
    img_dir.mkdir(parents=True, exist_ok=True)
    item_ids = [f"i{i:05d}" for i in range(spec.n_items)]
    rel = [f"images/{tag}/{iid}.png" for iid in item_ids]
    r_img = np.random.default_rng(np.random.SeedSequence([spec.seed, GENERATOR_VERSION, 7]))
    for s in range(0, spec.n_items, 256):
        imgs = render(world.render_params[s : s + 256], spec.image_size, r_img, spec.clutter, spec.illumination)
        for k, im in enumerate(imgs):
            Image.fromarray(im, "RGB").save(out_dir / rel[s + k], compress_level=1)
    names = _label_names(spec)
    items = pd.DataFrame({
        "item_id": item_ids,
        "image": rel,
        "labels": [[names[j] for j in np.flatnonzero(row)] for row in world.labels],
    })
    inter = pd.DataFrame({
        "user_id": [f"u{u:05d}" for u in world.interactions[:, 0]],
        "item_id": [item_ids[i] for i in world.interactions[:, 1]],
    })
    params = {"spec": dataclasses.asdict(spec), "generator_version": GENERATOR_VERSION, "render_tag": tag}
    report = {"generated_in_s": round(time.perf_counter() - t0, 3)}
    return write_dataset(out_dir, items, inter, name=name, source="synthetic", labels=names,
                         params=params, report=report)


# ----------------------------------------------------------------------------- presets

#: Presets are data.  The paper-shaped ones copy Table 2's #labels, avg. positive labels and
#: Gini; sizes are scaled to this machine and densities keep the paper's order
#: (MovieLens >> Toys > Clothing > Pinterest).
PRESETS: dict[str, tuple[WorldSpec, str]] = {
    "synthetic": (
        # pixel_dims = latent_dim: every label direction is visible in the pixels (through the
        # colour cast), so mtl > image_only ~ mtl with shuffled CF at label ratio 0.1 (tests/test_train.py)
        WorldSpec(n_items=800, n_users=400, n_labels=10, avg_pos_labels=1.5, gini=0.45,
                  interactions_per_item=40.0, latent_dim=6, pixel_dims=6, image_size=32),
        "small latent-factor world (800 items, 400 users, 10 labels, 32 px): the README default",
    ),
    "synthetic-tiny": (
        WorldSpec(n_items=150, n_users=60, n_labels=5, avg_pos_labels=1.4, gini=0.35, min_class_size=4,
                  interactions_per_item=12.0, latent_dim=4, pixel_dims=3, clutter=1, image_size=16),
        "tiny world for tests (150 items, 60 users, 5 labels, 16 px)",
    ),
    "synthetic-toys": (
        WorldSpec(n_items=2000, n_users=1500, n_labels=54, avg_pos_labels=1.28, gini=0.58, min_class_size=6,
                  interactions_per_item=14.0, latent_dim=8, pixel_dims=6, image_size=64),
        "Amazon-Toys look-alike: 54 labels, 1.28 avg. positives, Gini 0.58 (2,000 items, 64 px)",
    ),
    "synthetic-clothing": (
        WorldSpec(n_items=3000, n_users=2500, n_labels=199, avg_pos_labels=3.22, gini=0.74, min_class_size=4,
                  interactions_per_item=12.0, latent_dim=10, pixel_dims=8, image_size=64),
        "Amazon-Clothing look-alike: 199 labels, 3.22 avg. positives, Gini 0.74 (3,000 items, 64 px)",
    ),
    "synthetic-movielens": (
        WorldSpec(n_items=1500, n_users=600, n_labels=19, avg_pos_labels=2.03, gini=0.51, min_class_size=8,
                  interactions_per_item=30.0, latent_dim=6, pixel_dims=5, image_size=64),
        "MovieLens look-alike: 19 genres, 2.03 avg. positives, Gini 0.51 (1,500 items, 64 px)",
    ),
    "synthetic-pinterest": (
        WorldSpec(n_items=3000, n_users=3000, n_labels=32, avg_pos_labels=1.0, gini=0.48, min_class_size=8,
                  interactions_per_item=10.0, latent_dim=8, pixel_dims=6, image_size=64),
        "Pinterest look-alike: 32 categories, single-label, Gini 0.48 (3,000 items, 64 px)",
    ),
}


def _register(name: str, spec: WorldSpec, description: str) -> None:
    def build(out_dir: Path) -> Path:
        return build_world(spec, out_dir, name=name)

    build.__name__ = f"build_{name.replace('-', '_')}"
    build.__doc__ = description
    register_dataset(name, "synthetic", description)(build)


for _name, (_spec, _desc) in PRESETS.items():
    _register(_name, _spec, _desc)
