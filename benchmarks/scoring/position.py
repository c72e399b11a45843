"""Position error for DoF 6: each object's pixels, found by colour, against the object drawn at its true place.

The 6-DoF objects only translate, under an orthographic camera and a directional light, so an
object's image at any position is its image at the centre shifted. We render each object alone at
the centre once (at the supersampled resolution, through the render pool), composite the true
frame from the factors (front object first, occluding the others), give every lit pixel of both
frames to the object of the nearest colour direction, and score each object by the earth mover's
distance between its predicted and its true pixel mass (docs/benchmark.md). Beside it, a colour-blind
placement score: the same distance between all the predicted and all the true foreground mass, so a
prediction at the right place in the wrong colour (grey) is told apart from one at the wrong place.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from benchmarks.scoring import tables
from ibutil.errors import UserError
from render.presets import RenderConfig, poses_from_factors

OUT_OF_VIEW = 10.0  # ndc position that puts an object outside the orthographic view (half extent 1)
LIT = 0.02  # a pixel counts when its brightest channel exceeds this (5/255): the background is 0
FOUND_FRACTION = 0.25  # an object is found when its predicted mass is at least this share of its true mass
VISIBLE_MASS = 1.0  # an object whose true visible mass is below one fully lit pixel is not scored
DIRECTIONS = 16  # projection directions of the sliced earth mover's distance (scale ripple +-0.3%)
MIN_COLOUR_ANGLE_DEG = 3.0  # objects whose colour directions are closer than this cannot be told apart
CHUNK = 64  # predictions per batch: the distance holds (CHUNK x K, DIRECTIONS, H*W) float32


@dataclass(frozen=True)
class ObjectTemplates:
    """Each object of a 6-DoF dataset rendered alone at the centre of the frame."""

    config: RenderConfig  # the dataset's render config (dof 6)
    frames: np.ndarray  # (K, S, S, 3) uint8 at S = size x supersample, object k alone at ndc (0, 0)
    masks: np.ndarray  # (K, S, S) bool, object k's pixels
    meta: dict  # cache key, build seconds, renderer

    @property
    def colours(self) -> np.ndarray:
        """(K, 3) unit colour direction of each object: its mean rendered colour, normalised."""
        mean = np.stack([f[m].mean(axis=0) for f, m in zip(self.frames.astype(np.float64), self.masks)])
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)

    @property
    def nbytes(self) -> int:
        return int(self.frames.nbytes + self.masks.nbytes)


def object_templates(config: RenderConfig, cache: str | os.PathLike, progress: bool = True) -> ObjectTemplates:
    """The templates of `config`'s objects: loaded from `<cache>/tables/`, or rendered and cached."""
    if config.dof != 6:
        raise UserError(f"object templates are for dof 6, not {config.dof}; dof 1 and 2 use pose tables")
    k = len(config.objects)
    factors = np.full((k, 2 * k), OUT_OF_VIEW)
    for i in range(k):
        factors[i, 2 * i:2 * i + 2] = 0.0  # object i at the centre, the others out of view
    side = config.size * config.supersample

    def build():
        if progress:  # a first run's wait: mostly the GL start-up of the render worker, once per cache
            print(f"object templates dof6: rendering {k} objects once (GL start-up takes most of it), cached in "
                  f"{os.path.join(str(cache), 'tables')} for every later run", file=sys.stderr)
        # Rendered at the supersampled side without box filtering, so shifts can be rounded to 1/supersample px.
        frames, masks, info = tables.render_poses(config, poses_from_factors(config, factors), side, 1, 1,
                                                  progress, "object templates")
        return {"frames": frames, "masks": masks}, info

    arrays = tables.cached(cache, tables.table_key("object-templates", config), build)
    templates = ObjectTemplates(config, arrays["frames"], arrays["masks"] == np.arange(1, k + 1)[:, None, None],
                                json.loads(str(arrays["meta"])))
    c = templates.colours
    angles = np.degrees(np.arccos(np.clip(c @ c.T, -1, 1)))[np.triu_indices(k, 1)]
    if angles.min() < MIN_COLOUR_ANGLE_DEG:
        raise UserError(f"objects {', '.join(config.objects)} render in colours {angles.min():.1f} deg apart; "
                        "position_metrics needs distinct colours")
    return templates


def _paste(canvas: np.ndarray, covered: np.ndarray, frame: np.ndarray, mask: np.ndarray, top: int, left: int) -> None:
    """Draw a cropped object (frame (h, w, 3), mask (h, w) bool) with its corner at (top, left), clipped to
    the canvas, where nothing nearer covers it yet; mark its pixels covered."""
    side = canvas.shape[0]
    r0, c0 = max(0, -top), max(0, -left)
    r1, c1 = min(mask.shape[0], side - top), min(mask.shape[1], side - left)
    if r0 >= r1 or c0 >= c1:
        return
    rows, cols = slice(top + r0, top + r1), slice(left + c0, left + c1)
    draw = mask[r0:r1, c0:c1] & ~covered[rows, cols]
    canvas[rows, cols][draw] = frame[r0:r1, c0:c1][draw]
    covered[rows, cols] |= draw


def true_frames(templates: ObjectTemplates, factors: np.ndarray) -> np.ndarray:
    """The true frames of factors (N, 2K) composited from the templates: (N, 3, H, W) float64 in [0, 1].

    Object k at ndc (x, y) is its template moved by (-y, x) x S/2 supersampled pixels (rounded),
    drawn behind objects 0..k-1 (the presets' fixed depth order), then box-filtered to H x W.
    """
    config, side = templates.config, templates.frames.shape[1]
    k, ss = len(config.objects), config.supersample
    xy = np.asarray(factors, dtype=np.float64).reshape(len(factors), k, 2)
    shifts = np.rint(xy * side / 2.0).astype(int)  # (N, K, 2) columns right, rows up
    crops = []  # per object: its bounding box's frame, mask and corner in the template
    for frame, mask in zip(templates.frames, templates.masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        crops.append((frame[box].astype(np.float64), mask[box], rows[0], cols[0]))
    canvas = np.zeros((len(xy), side, side, 3), np.float64)  # whole 0..255 pixel values
    for n in range(len(xy)):
        covered = np.zeros((side, side), bool)
        for i, (frame, mask, top, left) in enumerate(crops):  # front to back
            _paste(canvas[n], covered, frame, mask, top - shifts[n, i, 1], left + shifts[n, i, 0])
    # Box filter: a sum of whole numbers is exact in any order, so this equals each block's mean bit for bit.
    total = sum(canvas[:, r::ss, c::ss] for r in range(ss) for c in range(ss))  # (N, H, W, 3)
    return (total / (ss * ss) / 255.0).transpose(0, 3, 1, 2)


def object_mass(images, colours: np.ndarray, device: torch.device) -> torch.Tensor:
    """Each object's pixel mass: images (N, 3, H, W) in [0, 1] -> (N, K, H*W) float64.

    A lit pixel goes wholly to the object of the nearest colour direction (cosine), with its
    brightness (L2 norm of RGB) as mass; unlit pixels have none.
    """
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    x = x.to(device, torch.float64).flatten(2)  # (N, 3, HW)
    g = torch.from_numpy(colours).to(device, torch.float64)  # (K, 3)
    norm = x.norm(dim=1)  # (N, HW)
    dots = torch.einsum("kc,ncp->nkp", g, x)  # (N, K, HW): highest cosine = highest dot product
    nearest = torch.zeros(dots.shape[0], dots.shape[2], dtype=torch.int64, device=dots.device)  # (N, HW)
    best = dots[:, 0]
    for k in range(1, len(colours)):  # argmax over a short middle axis, first maximum kept (argmax is slow here)
        better = dots[:, k] > best
        nearest[better], best = k, torch.where(better, dots[:, k], best)
    lit = x.amax(dim=1) > LIT
    onehot = torch.nn.functional.one_hot(nearest, len(colours)).permute(0, 2, 1)  # (N, K, HW)
    return onehot * (norm * lit)[:, None]


@lru_cache(maxsize=8)
def _projections(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per direction, the pixel order along it and the gaps between consecutive projected pixel centres:
    (D, H*W) int64, (D, H*W - 1) float32."""
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                                indexing="ij")
    theta = torch.arange(DIRECTIONS, dtype=torch.float64) * math.pi / DIRECTIONS
    proj = torch.cos(theta)[:, None] * cols.ravel() + torch.sin(theta)[:, None] * rows.ravel()  # (D, HW)
    proj, order = proj.sort(dim=1)
    return order, proj.diff(dim=1).float()


def sliced_emd(a: torch.Tensor, b: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sliced earth mover's distance in pixels between masses a, b (M, H*W) (each normalised to 1) -> (M,).

    The mean over DIRECTIONS evenly spaced directions of the 1-D distance between the projected
    masses (the integral of the difference of their cumulative sums), times pi/2, so that a mass
    moved by a vector v scores |v| (to within 0.3% whatever its direction).
    """
    order, gaps = _projections(height, width)
    diff = (a / a.sum(dim=1, keepdim=True) - b / b.sum(dim=1, keepdim=True)).float()  # (M, HW)
    # index_select over the flattened orders gives the same values as diff[:, order], about 3x faster
    cdf = diff.index_select(1, order.flatten().to(a.device)).view(len(diff), *order.shape).cumsum(dim=2)[:, :, :-1]  # (M, D, HW-1)
    return (cdf.abs() * gaps.to(a.device)).sum(dim=2).mean(dim=1).double() * (math.pi / 2.0)


def true_mass(templates: ObjectTemplates, factors: np.ndarray, device: torch.device) -> torch.Tensor:
    """Each object's pixel mass in the true frames of factors (N, 2K): (N, K, H*W) float64, composited and
    assigned CHUNK frames at a time (as position_metrics scores them, so either way gives the same bits)."""
    factors = np.asarray(factors, dtype=np.float64)
    k = len(templates.config.objects)
    if factors.ndim != 2 or factors.shape[1] != 2 * k:
        raise UserError(f"factors must have shape (N, {2 * k}), got {factors.shape}")
    colours = templates.colours
    return torch.cat([object_mass(true_frames(templates, factors[i:i + CHUNK]), colours, device)
                      for i in range(0, len(factors), CHUNK)])


def position_metrics(pred, factors_true, templates: ObjectTemplates,
                     device: str | torch.device | None = None, masses: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Per prediction: `position_error_px` (mean over the visible objects of each object's earth mover's
    distance in pixels; the image diagonal for an object not found), `position_found` (share found) and
    `placement_error_px` (colour-blind: the distance between the whole lit mass of the prediction and of the
    truth, the union of the objects; the image diagonal for a prediction with no lit pixel; NaN where no
    object is visible).

    pred (N, 3, H, W) in [0, 1]; factors_true (N, 2K) the true ndc (x, y) of each object; `masses`: their
    true_mass(), when the caller scores several predictions of the same targets (computed here otherwise).
    """
    config = templates.config
    device = torch.device(device or (pred.device if isinstance(pred, torch.Tensor) else "cpu"))
    factors_true = np.asarray(factors_true, dtype=np.float64)
    n, k, size = len(pred), len(config.objects), config.size
    if tuple(pred.shape[1:]) != (3, size, size):
        raise UserError(f"predictions must have shape (N, 3, {size}, {size}), got {tuple(pred.shape)}")
    if factors_true.shape != (n, 2 * k):
        raise UserError(f"factors must have shape {(n, 2 * k)}, got {factors_true.shape}")
    colours = templates.colours
    masses = true_mass(templates, factors_true, device) if masses is None else masses.to(device)
    diagonal = math.hypot(size, size)
    errors, found, placement = [], [], []
    for start in range(0, n, CHUNK):
        sl = slice(start, start + CHUNK)
        p = object_mass(pred[sl], colours, device)  # (B, K, HW)
        t = masses[sl]
        p_total, t_total = p.sum(dim=2), t.sum(dim=2)  # (B, K)
        visible = t_total >= VISIBLE_MASS
        hit = visible & (p_total >= FOUND_FRACTION * t_total) & (p_total > 0)
        # Uniform placeholder masses where an object is not found or not visible keep the division
        # defined; those distances are replaced below.
        emd = sliced_emd(p.flatten(0, 1) + (~hit).flatten()[:, None].double(),
                         t.flatten(0, 1) + (~visible).flatten()[:, None].double(), size, size).reshape(-1, k)
        per_object = torch.where(hit, emd, torch.full_like(emd, diagonal))
        count = visible.sum(dim=1)
        errors.append(torch.where(count > 0, (per_object * visible).sum(dim=1) / count.clamp_min(1), torch.nan).cpu())
        found.append(((hit.sum(dim=1)) / count.clamp_min(1)).cpu())
        # Colour-blind: every lit pixel's mass whatever object its colour names, against the union of the objects.
        p_all, t_all = p.sum(dim=1), t.sum(dim=1)  # (B, HW)
        lit, shown = p_all.sum(dim=1) > 0, t_all.sum(dim=1) >= VISIBLE_MASS
        place = sliced_emd(p_all + (~lit)[:, None].double(), t_all + (~shown)[:, None].double(), size, size)
        placement.append(torch.where(shown, torch.where(lit, place, diagonal), torch.nan).cpu())
    return {"position_error_px": torch.cat(errors).numpy(), "position_found": torch.cat(found).double().numpy(),
            "placement_error_px": torch.cat(placement).numpy()}
