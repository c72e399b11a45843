"""Look at a dataset file before training on it: summary, verification, contact sheet and GIF."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ibdata import h5format
from ibutil.errors import UserError
from ibutil.io import atomic_path, ensure_writable_folder


def summary(path: str | os.PathLike) -> str:
    """A human-readable summary of a validated file: header, splits, factor ranges."""
    lines = [f"{path}"]
    with h5format.open_dataset(path) as f:
        h = h5format.read_header(f)
        lines.append(f"  format      {h5format.FORMAT} v{h.format_version}, preset {h.preset} (dof {h.dof})")
        lines.append(f"  images      {h.image_size}x{h.image_size} RGB, seed {h.seed}")
        lines.append("  objects     " + ", ".join(f"{o['index']}={o['name']}" for o in h.objects))
        lines.append(f"  generator   {h.generator}; {h.renderer.get('pyrender')} on "
                     f"{h.renderer.get('platform')} ({h.renderer.get('gl_renderer')})")
        if h.camera is not None:
            cam = h.camera
            lines.append(f"  camera      {cam['type']}, fx = fy = {cam['intrinsics'][0][0]:.2f} px, "
                         f"at z = {cam['pose'][2][3]:g}; poses per frame in SPLIT/poses")
        if h.heldout is not None:
            region = h.heldout["region"]
            lines.append(f"  protocol    {h.heldout['protocol']}" + ("" if region is None else
                         f"; held-out {region['kind']} centre {region['centre']} radius {region['radius']:g} "
                         f"margin {region['margin']:g} {region['unit']}"))
        for split, (s, t) in h.shapes.items():
            scored = f" ({int(f[split]['scored'][()].sum())} scored)" if "scored" in f[split] else ""
            lines.append(f"  {split:<7}     {s} sequences x {t} frames = {s * t} frames{scored}")
            if s == 0:
                continue
            factors = f[split]["factors"][()]
            for i, (name, unit) in enumerate(zip(h.factor_names, h.factor_units)):
                col = factors[..., i]
                lines.append(f"    {name:<18} {col.min():9.3f} .. {col.max():9.3f} {unit}")
    return "\n".join(lines)


def contact_sheet(path: str | os.PathLike, out: str | os.PathLike, split: str = "train",
                  sequences: int = 8, frames: int = 12, scale: int = 2, with_masks: bool = True) -> Path:
    """PNG grid: one row per sequence (first `sequences`), `frames` frames evenly spaced along it.

    With `with_masks`, each row is followed by its masks, object k drawn in its colour.
    """
    with h5format.open_dataset(path) as f:
        g = h5format.require_split(f, split, str(path))
        n_seq, n_frames = g["frames"].shape[:2]
        if n_seq == 0:
            raise UserError(f"the {split} split of {path} is empty; choose another --split")
        rows_idx = np.arange(min(sequences, n_seq))
        cols_idx = np.unique(np.linspace(0, n_frames - 1, min(frames, n_frames)).round().astype(int))
        imgs = g["frames"][rows_idx.tolist()][:, cols_idx]  # (R, C, H, W, 3)
        masks = g["masks"][rows_idx.tolist()][:, cols_idx]  # (R, C, H, W)
        colours = h5format.read_header(f).objects
    palette = np.zeros((256, 3), np.uint8)
    for o in colours:
        palette[o["index"]] = (np.clip(o["colour"], 0, 1) * 255).astype(np.uint8)
    rows = []
    for r in range(len(rows_idx)):
        rows.append(np.concatenate(list(imgs[r]), axis=1))
        if with_masks:
            rows.append(np.concatenate(list(palette[masks[r]]), axis=1))
    return _save_png(np.concatenate(rows, axis=0), out, scale)


def sequence_gif(path: str | os.PathLike, out: str | os.PathLike, split: str = "train", sequence: int = 0,
                 scale: int = 4, fps: int = 12) -> Path:
    """Animated GIF of one sequence, upscaled by `scale` with nearest-neighbour."""
    with h5format.open_dataset(path) as f:
        n_seq = h5format.require_split(f, split, str(path))["frames"].shape[0]
        if not 0 <= sequence < n_seq:
            raise UserError(f"--sequence must be in 0..{n_seq - 1} for {split}")
        frames = f[split]["frames"][sequence]  # (T, H, W, 3)
    out = Path(out)
    images = [Image.fromarray(fr).resize((fr.shape[1] * scale, fr.shape[0] * scale), Image.NEAREST) for fr in frames]
    ensure_writable_folder(out.parent, "output path")
    with atomic_path(out) as tmp:  # an interrupted write leaves no half a GIF
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return out


def _save_png(array: np.ndarray, out: str | os.PathLike, scale: int) -> Path:
    out = Path(out)
    ensure_writable_folder(out.parent, "output path")
    img = Image.fromarray(array)
    with atomic_path(out) as tmp:  # an interrupted write leaves no half a PNG
        img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(tmp, format="PNG")
    return out
