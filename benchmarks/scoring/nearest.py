"""Exact nearest neighbour by cosine similarity over a fixed table of images, at a fraction of a brute-force product.

Brute force compares a query with every table row in D = H*W*3 dimensions. Here an orthonormal basis P
(d, D) of the table's principal directions around its mean m splits every unit-norm row u and query q:
u - m = P^T a + r and q - m = P^T b + s, with the residuals r, s orthogonal to P. Then

    ||q - u||^2 = ||b - a||^2 + ||s - r||^2 >= ||b - a||^2 + (||s|| - ||r||)^2 =: L(q, u)

(the triangle inequality), a lower bound that costs d + 1 multiplications per row instead of D. The
search ranks the rows by L, scores the CANDIDATES lowest exactly (float64 cosine from the uint8 pixels),
and is done when the next bound exceeds the best exact distance by SLACK; a query where it does not
(rare) is scored exactly on every row whose bound is within SLACK of the best, so no row that could
be nearer is ever skipped. Ties (equal float64 cosine) go to the lowest row index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DIMS = 64  # principal directions of the bound: (B, N) x (d + 1) work per batch instead of (B, N) x D
CANDIDATES = 8  # rows scored exactly per query before the bound is checked
# Margin on the bound for float32 rounding: each bound is a (d + 1)-term dot product of numbers of size
# <= 2, whose rounding error is below (d + 1) * 2^-24 * 4 < 2e-5, fifty times smaller than this.
SLACK = 1e-3
EXACT_BATCH = 64  # queries per exact re-rank: (EXACT_BATCH, CANDIDATES, D) float64
# Tables up to this many pixel values keep a float64 copy (64 MiB at most: DoF 1's 720 frames), so the re-rank
# gathers rows without converting them; larger tables (DoF 2: 100 M values) convert the few rows it reads.
FLOAT64_COPY = 2**23


def build(rows: np.ndarray, dims: int = DIMS, seed: int = 0) -> dict[str, np.ndarray]:
    """The search arrays of a table, rows (N, D) uint8 (any non-negative pixels): mean (D,), basis (d, D),
    coords (N, d + 1) = [a, ||r||] per row, and tsq (N,) = ||a||^2 + ||r||^2, all float32.

    The basis is torch.pca_lowrank's (randomized, seeded here, so the same table gives the same bytes);
    any orthonormal basis keeps the search exact, a better one only makes it faster.
    """
    x = torch.from_numpy(np.ascontiguousarray(rows)).float()  # (N, D)
    x /= x.norm(dim=1, keepdim=True).clamp_min(1e-12)  # unit rows (an all-black row stays zero)
    mean = x.mean(dim=0)
    x -= mean
    d = max(1, min(dims, x.shape[0] - 1, x.shape[1]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, v = torch.pca_lowrank(x, q=d, center=False, niter=2)  # (D, d)
    basis = torch.linalg.qr(v.double())[0].T.float().contiguous()  # (d, D) orthonormal rows
    coords = []
    for chunk in x.split(4096):
        a = chunk @ basis.T  # (n, d)
        coords.append(torch.cat([a, (chunk - a @ basis).norm(dim=1, keepdim=True)], dim=1))
    coords = torch.cat(coords)  # (N, d + 1)
    return {"mean": mean.numpy(), "basis": basis.numpy(), "coords": coords.numpy(),
            "tsq": (coords * coords).sum(dim=1).numpy()}


@dataclass(frozen=True)
class Index:
    """A table's rows and search arrays on one device."""

    rows: torch.Tensor  # (N, D) uint8, the exact re-rank reads these
    norms: torch.Tensor  # (N,) float64 norm of each row / 255
    mean: torch.Tensor  # (D,) float32
    basis: torch.Tensor  # (d, D) float32
    coords: torch.Tensor  # (N, d + 1) float32
    tsq: torch.Tensor  # (N,) float32
    exact_rows: torch.Tensor  # (N, D) what the re-rank gathers: float64 pixels (small tables) or the uint8 rows

    @classmethod
    def on(cls, rows: np.ndarray, arrays: dict[str, np.ndarray], device: torch.device) -> Index:
        r = torch.from_numpy(np.ascontiguousarray(rows)).to(device)
        norms = torch.cat([c.double().norm(dim=1) for c in r.split(4096)]) / 255.0
        t = {k: torch.from_numpy(np.asarray(arrays[k])).to(device, torch.float32) for k in ("mean", "basis", "coords", "tsq")}
        return cls(r, norms, **t, exact_rows=r.double() if r.numel() <= FLOAT64_COPY else r)


def exact_distance(index: Index, queries: torch.Tensor, norms: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Cosine distance 1 - cos in float64 of queries (B, D) (norms (B,)) to the table rows `rows` (B, C) -> (B, C)."""
    dot = torch.einsum("bd,bcd->bc", queries.double(), index.exact_rows[rows].double())  # pixels in 0..255
    return 1.0 - dot / (255.0 * norms[:, None] * index.norms[rows].clamp_min(1e-300))


def _pick(distance: torch.Tensor, rows: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The nearest of candidate rows (B, C) by distance (B, C), the lowest row index among equals: (B,) x2."""
    best = distance.min(dim=1).values
    arg = torch.where(distance == best[:, None], rows, n).min(dim=1).values
    return arg, best


def search(index: Index, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Nearest table row of each query (B, D) float (non-zero) by cosine: row (B,) int64, cosine distance
    1 - cos (B,) float64, and how many queries needed the fallback (the bound left more than CANDIDATES rows)."""
    n = len(index.rows)
    norms = queries.double().norm(dim=1)  # (B,)
    unit = queries.float() / queries.float().norm(dim=1, keepdim=True).clamp_min(1e-12)
    centred = unit - index.mean
    b = centred @ index.basis.T  # (B, d)
    s = (centred - b @ index.basis).norm(dim=1, keepdim=True)  # (B, 1) residual norm
    q = torch.cat([b, s], dim=1)  # (B, d + 1)
    qsq = (q * q).sum(dim=1)  # (B,)
    # L - qsq = tsq - 2 q . coords: one (B, d+1) x (d+1, N) product; L >= 2 * (1 - cos) - rounding
    partial = torch.addmm(index.tsq[None], q, index.coords.T, alpha=-2.0)  # (B, N)
    k = min(CANDIDATES + 1, n)
    low, cand = partial.topk(k, dim=1, largest=False)  # ascending
    head = cand[:, :CANDIDATES]
    exact = torch.cat([exact_distance(index, queries[i:i + EXACT_BATCH], norms[i:i + EXACT_BATCH],
                                      head[i:i + EXACT_BATCH]) for i in range(0, len(head), EXACT_BATCH)])
    arg, best = _pick(exact, head, n)
    fallback = 0
    if k > CANDIDATES:
        # Squared unit distance is 2 (1 - cos): a row can only beat `best` if its bound is below 2 best.
        threshold = 2.0 * best.float() - qsq + SLACK  # (B,) on the scale of `partial`
        for i in torch.nonzero(low[:, CANDIDATES] <= threshold).flatten().tolist():
            rows = torch.nonzero(partial[i] <= threshold[i]).flatten()[None]  # (1, C') every row that may be nearer
            a, d = _pick(exact_distance(index, queries[i:i + 1], norms[i:i + 1], rows), rows, n)
            arg[i], best[i] = a[0], d[0]
            fallback += 1
    return arg, best.clamp_min(0.0), fallback
