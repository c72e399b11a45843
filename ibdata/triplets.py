"""Triplets (x0, x1, x2) = frames (t-k, t, t+k) of the sequences in one split of an HDF5 v1 or v2 file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ibdata import tasks
from ibdata.frames import to_float
from ibdata.h5format import DatasetHeader, open_dataset, read_header, read_split, require_field, require_split
from ibutil.errors import UserError
from ibutil.run import NO_VAL

# Splits whose frames take more bytes than this stay on disk and are read per item, with the
# file opened lazily once per worker process; smaller ones (all the default files) load once.
IN_MEMORY_MAX_BYTES = 2 << 30


def normalize_gaps(gaps) -> tuple[int, ...]:
    """One gap or a set of gaps -> a sorted tuple of distinct positive ints; UserError otherwise."""
    seq = tuple(gaps) if isinstance(gaps, (tuple, list, set, frozenset, np.ndarray)) else (gaps,)
    if not seq or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1 for k in seq):
        raise UserError(f"gaps must be one positive integer or a set of them (e.g. 1 or 1,2,4), got {gaps!r}")
    return tuple(sorted({int(k) for k in seq}))


def check_gaps(header: DatasetHeader, gaps, splits=None) -> None:
    """UserError unless every gap k fits the sequences of every split in `splits` (all of the file's when None):
    a triplet (t-k, t, t+k) needs 2k+1 <= T frames. run-benchmark checks every split (it trains on train and
    selects on val), export-triplets the scored ones, a TripletDataset its own."""
    for split in header.shapes if splits is None else splits:
        n_frames = header.shapes[split][1]
        too_large = [k for k in gaps if 2 * k + 1 > n_frames]
        if too_large:
            k = too_large[0]
            raise UserError(f"--gap {k} is too large for {header.path}: a triplet (t-k, t, t+k) needs 2k+1 = {2 * k + 1} "
                            f"frames but the {split} split's sequences have T = {n_frames}; use gaps <= "
                            f"{(n_frames - 1) // 2}")


def triplet_index(n_seq: int, n_frames: int, gaps: tuple[int, ...]) -> np.ndarray:
    """Every (sequence, t, k) with k <= t < T-k, as an (N, 3) int64 array ordered by k, then s, then t."""
    rows = [np.array([(s, t, k) for s in range(n_seq) for t in range(k, n_frames - k)], dtype=np.int64)
            .reshape(-1, 3) for k in gaps]
    return np.concatenate(rows)


class TripletDataset(Dataset):
    """Triplets of one split; item i is a dict of x0, x1, x2 (3, H, W) float in [0, 1] and x1's mask and factors.

    For training, `batch(indices)` gathers many triplets as uint8 in one numpy indexing step and
    converts on the target device, which keeps loading far below the cost of a training step.
    Splits: train, val, test, heldout (v2 files; v1 files have train and test). For heldout, only
    triplets whose middle frame is scored (lies in the held-out region) are kept unless
    scored_only=False. `factors` (S, T, F) holds every frame's factors for pose metrics and
    well-posedness at any tau (`triplet_factors`, `well_posed`).
    """

    def __init__(self, data: str | os.PathLike | DatasetHeader, split: str = "train", gaps=1,
                 in_memory: bool | None = None, scored_only: bool | None = None):
        """`data`: a file's path, or its header (read_header) when the caller has read it already."""
        self.path = data.path if isinstance(data, DatasetHeader) else Path(data)
        self.split = split
        self.gaps = normalize_gaps(gaps)
        with open_dataset(self.path) as f:  # validates format, version and schema
            g = require_split(f, split, str(self.path))
            self.header = read_header(data if isinstance(data, DatasetHeader) else f)
            self.factors = g["factors"][()]  # (S, T, F) float32: small, always in memory
            self.scored = g["scored"][()].astype(bool) if "scored" in g else None  # (S, T) heldout only
        (self.n_seq, self.n_frames), self.image_size = self.header.shapes[split], self.header.image_size
        shape = (self.n_seq, self.n_frames, self.image_size, self.image_size, 3)  # of the frames
        self.factor_names, self.factor_units = self.header.factor_names, self.header.factor_units
        if self.n_seq == 0:
            raise UserError(f"{self.path}: the {split} split has no sequences; render a file with some")
        self.scored_only = (split == "heldout") if scored_only is None else scored_only
        if self.scored_only and self.scored is None:
            raise UserError(f"{self.path}: the {split} split has no scored frames (only heldout has them); "
                            "drop scored_only")
        check_gaps(self.header, self.gaps, [split])
        self.index = triplet_index(self.n_seq, self.n_frames, self.gaps)  # (N, 3): s, t, k
        if self.scored_only:
            self.index = self.index[self.scored[self.index[:, 0], self.index[:, 1]]]
            if len(self.index) == 0:
                raise UserError(f"{self.path}: no {split} triplet with gaps {self.gaps} has its middle frame in the "
                                "held-out region; use smaller gaps or more --heldout-sequences")
        if in_memory is None:
            in_memory = int(np.prod(shape)) <= IN_MEMORY_MAX_BYTES
        self.in_memory = in_memory
        self._arrays = read_split(self.path, split) if in_memory else None
        self._file, self._pid = None, None  # the lazily opened file of this process (on-disk mode)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        b = self.batch(np.array([i]))
        return {name: value[0] for name, value in b.items()}

    def _group(self):
        # h5py handles do not survive fork: each DataLoader worker opens its own on first use.
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = open_dataset(self.path), os.getpid()
        return self._file[self.split]

    def _read(self, name: str, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Rows (s[i], t[i]) of array `name` of the split: (n, ...) in the stored dtype."""
        if self._arrays is not None:
            return getattr(self._arrays, name)[s, t]
        ds = self._group()[name]
        try:
            return np.stack([ds[int(a), int(b)] for a, b in zip(s, t)])
        except OSError as exc:
            raise UserError(f"{self.path}: cannot read {self.split}/{name} ({exc}); the file is truncated "
                            "or corrupt") from None

    def batch_uint8(self, indices) -> dict[str, torch.Tensor]:
        """Triplets `indices` as stored: x0, x1, x2 (n, 3, H, W) uint8, mask (n, H, W) uint8,
        factors (n, F) float32 and gap (n,) int64, all on the CPU."""
        s, t, k = self.index[np.asarray(indices, dtype=np.int64)].T
        frames = [self._read("frames", s, t + d) for d in (-k, 0, k)]  # 3 x (n, H, W, 3)
        out = {f"x{j}": torch.from_numpy(np.ascontiguousarray(fr)).permute(0, 3, 1, 2)
               for j, fr in enumerate(frames)}  # (n, 3, H, W) views, no copy
        out["mask"] = torch.from_numpy(np.ascontiguousarray(self._read("masks", s, t)))
        out["factors"] = torch.from_numpy(np.ascontiguousarray(self._read("factors", s, t)))
        out["gap"] = torch.from_numpy(k.copy())
        return out

    def batch(self, indices, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Like batch_uint8, with x0, x1, x2 moved to `device` as float32 in [0, 1].

        The uint8 frames cross to the device before conversion: a quarter of the bytes of float32.
        """
        out = self.batch_uint8(indices)
        for j in range(3):
            out[f"x{j}"] = to_float(out[f"x{j}"], device).contiguous()  # (n, 3, H, W), NCHW for the models
        out["mask"], out["factors"], out["gap"] = (out[n].to(device) for n in ("mask", "factors", "gap"))
        return out

    def triplet_factors(self, indices=None, tau=0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Factors of x0, x_tau and x2 of triplets `indices` (default all): three (n, F) float32 arrays.

        x_tau is frame t - k + tau * 2k (tau = 0.5: the middle frame x1; tau = j / (2k) for the
        intermediate frames); tau is a scalar or (n,), and tau * 2k must be an integer.
        """
        idx = self.index if indices is None else self.index[np.asarray(indices, dtype=np.int64)]
        s, t, k = idx.T
        step = np.asarray(tau, dtype=np.float64) * 2 * k  # (n,) frames after t - k
        if not np.allclose(step, np.round(step)):
            raise UserError("tau * 2k must be a whole number of frames (tau = j / (2k))")
        return self.factors[s, t - k], self.factors[s, t - k + np.round(step).astype(np.int64)], self.factors[s, t + k]

    def well_posed(self, indices=None, tau=0.5, tolerances: dict[str, float] | None = None) -> np.ndarray:
        """(n,) bool: x_tau's factors equal (1 - tau) x0's + tau x2's within ibdata.tasks.TOLERANCES."""
        f0, f_tau, f2 = self.triplet_factors(indices, tau)
        return tasks.well_posed(f0, f_tau, f2, tau, self.factor_units, tolerances)

    def poses(self, indices=None) -> np.ndarray:
        """Object world poses of x0, x1, x2 of triplets `indices`: (n, 3, K, 4, 4) float32 (v2 files only)."""
        idx = self.index if indices is None else self.index[np.asarray(indices, dtype=np.int64)]
        s, t, k = idx.T
        with open_dataset(self.path) as f:
            require_field(f, f"{self.split}/poses", str(self.path))
            poses = f[self.split]["poses"][()]  # (S, T, K, 4, 4)
        return np.stack([poses[s, t - k], poses[s, t], poses[s, t + k]], axis=1)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None  # never ship an open h5py handle to a worker
        return state


def val_dataset(data: str | os.PathLike | DatasetHeader, split: str, gaps) -> TripletDataset | None:
    """The validation triplets of `split`; None for split "none"; UserError if the file has no such split."""
    if split == NO_VAL:
        return None
    header = read_header(data)
    if split not in header.splits:
        raise UserError(f"{header.path} has no {split!r} split to select on; render a file with one, or pass "
                        f"val_split='{NO_VAL}' to train without selection (the last step is then used)")
    return TripletDataset(header, split, gaps)
