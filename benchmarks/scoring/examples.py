"""What scoring hands the report besides the records: the headline tau, the fields that name a row's triplets,
and the example in-betweens (each shown row's predictions on a few test pairs and along one path)."""

from __future__ import annotations

import numpy as np
import torch

from ibdata.frames import to_float
from ibdata.triplets import triplet_index

HEADLINE_TAU = 0.5  # the tables' tau: the middle frame
TRIPLET_ROW = ("method", "alpha", "kl", "seed", "reference")  # what names a row in triplets.csv.gz
# the leading columns of triplets.csv.gz (one line per scored triplet), then the metric columns
TRIPLET_KEYS = ("dof", "split", "gap", *TRIPLET_ROW, "s", "t", "well_posed")
N_EXAMPLES = 6  # test pairs shown in each in-between grid
INTERP_STEPS = 7  # points on each interpolation strip, both true end frames included


def pick_figures(dof: int, frames: np.ndarray, k: int, rows) -> tuple[dict, dict]:
    """The inputs of the example grid and the interpolation strips, from the test split at gap k.

    frames: (S, T, H, W, 3) uint8; rows: evaluate.Row objects to draw. Returns
    examples: label -> (N_EXAMPLES, 3, H, W) (x0, the true middle frame, each row's prediction at tau = 0.5, x2);
    strips: label -> (INTERP_STEPS, 3, H, W) along tau = 0..1 for the middle example, ends the true frames.
    """
    video = to_float(frames).permute(0, 1, 4, 2, 3)  # (S, T, 3, H, W)
    index = triplet_index(video.shape[0], video.shape[1], (k,))
    pick = np.unique(np.linspace(0, len(index) - 1, N_EXAMPLES).round().astype(int))
    s, t, _ = torch.from_numpy(index[pick]).T
    x0, x1, x2 = video[s, t - k], video[s, t], video[s, t + k]  # (n, 3, H, W)
    examples = {"first frame x0": x0.numpy(), "ground truth x1": x1.numpy()}
    for r in rows:
        try:
            examples[r.label] = r.predict(x0, x2, HEADLINE_TAU).float().clamp(0, 1).numpy()
        except LookupError:  # predictions made elsewhere that lack these pairs (e.g. exported without the test split)
            pass
    examples["second frame x2"] = x2.numpy()
    # The strips: one example (the middle one), decoded at evenly spaced tau; the truth at the nearest frames.
    m = len(pick) // 2
    steps = np.round(np.linspace(0, 1, INTERP_STEPS) * 2 * k).astype(np.int64)  # frames after t-k: j of tau = j/2k
    steps[1:-1] = np.clip(steps[1:-1], 1, 2 * k - 1)  # the inner points strictly between the ends (small k)
    strips = {"ground truth": video[s[m], torch.from_numpy(int(t[m]) - k + steps)].numpy()}
    # The rows predict at the truth's own taus (j / 2k), the only ones a predictions file (score-predictions) has.
    inner = torch.from_numpy(steps[1:-1] / (2 * k)).float()
    a, b = x0[m:m + 1].expand(len(inner), -1, -1, -1), x2[m:m + 1].expand(len(inner), -1, -1, -1)
    for r in rows:
        try:
            path = r.predict(a, b, inner).float().clamp(0, 1)
        except LookupError:  # predictions made elsewhere that lack these taus (e.g. exported with --tau 0.5)
            continue
        strips[r.label] = torch.cat([x0[m:m + 1], path, x2[m:m + 1]]).numpy()
    return examples, strips
