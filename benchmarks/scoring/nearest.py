"""Exact nearest neighbour by cosine similarity over a fixed table of images, at a fraction of a brute-force product.

Brute force compares a query with every table row in D = H*W*3 dimensions. Here an orthonormal basis P
(d, D) of the table's principal directions around its mean m splits every unit-norm row u and query q:
u - m = P^T a + r and q - m = P^T b + s, with the residuals r, s orthogonal to P. With z(u) = [a, ||r||]
and z(q) = [b, ||s||] in d + 1 dimensions,

    ||q - u||^2 = ||b - a||^2 + ||s - r||^2 >= ||b - a||^2 + (||s|| - ||r||)^2 = ||z(q) - z(u)||^2 =: L(q, u)

(the triangle inequality), a lower bound that costs d + 1 numbers per row instead of D. The rows are also
grouped into blocks of neighbours (for a pose table: tiles of the pose grid, whose frames look alike); a
block with centre c and radius rho = max ||z(u) - c|| over its rows bounds every row in it at once:
L(q, u) >= (||z(q) - c|| - rho)^2. So a query costs one bound per block, the rows of a few blocks, and
the exact float64 cosine (from the uint8 pixels) of the rows no bound rules out:

1. z(q) on the first DIMS directions; ||z(q) - c|| for every block; the row with the lowest bound among the
   rows of the PROBE blocks with the nearest centres is scored exactly: d1 = 1 - cos, ||q - u1||^2 = 2 d1.
2. Every row that could be as near as u1 has L <= 2 d1: it lies in a block whose bound is <= 2 d1 + SLACK
   and has its own bound <= 2 d1 + SLACK. A query left with more than REFINE such rows (a blurred or grey
   frame) bounds them again on all FINE_DIMS directions (a tighter bound: more directions, smaller
   residuals), and scores its row of lowest fine bound exactly too, whose distance may lower its limit; one
   whose blocks hold more than DENSE of the table bounds every row in one product instead.
   The rows left are scored exactly, and the nearest of them and u1 is the answer: no row is skipped that
   could be nearer, or as near (a tie).
3. A query left with more than SCREEN of the table after the coarse bound (a blurred, grey or flat frame,
   about as far from many poses as from its nearest) takes the fine bound of every row at once, one product;
   one left with more than CROWD of the table even so (a grey or flat frame) has its dot product with every row
   computed in float32 (the screen, about the bare product's price), with a proven bound on its rounding, and
   only the rows that may be as near as the nearest by those bounds are scored exactly. (Not on a small table.)

A small table (at most SMALL * D rows: the DoF 1 pose table, 720 rows) takes no blocks (_small_pairs): its first
row is the nearest by a rough z from one float32 product on SMALL_DIMS directions (any row would do), and a row u
as near as u1 has ||u - u1|| <= ||u - q|| + ||q - u1|| <= 2 sqrt(2 d1) (the triangle inequality in D dimensions),
so a query whose first row has no other row that close (the table's row-to-row distances, made once) has nothing
left to score: a query that is a table frame costs the rough z, its norm and one exact row. The others bound
every row at once on DIMS directions (within the same radius), then go on as in step 2.

Ties (equal float64 cosine) go to the lowest row index. Every bound is computed in float64 from float64
coordinates (the table's made once, here), so SLACK only has to cover float64 rounding (see below); the small
route's bounds carry their own float64 rounding bounds, and SMALL_SLACK only covers the exact distances'; the
screen's float32 rounding is bounded by screen_error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

DIMS = 64  # principal directions of the bound every query gets: d + 1 numbers per row and block instead of D
FINE_DIMS = 256  # ... and of the tighter bound for a query that the first leaves with more than REFINE rows
REFINE = 16  # rows in play beyond which a query's projection on FINE_DIMS (~50 exact distances' work) pays
BLOCK = 16  # rows per block when the caller gives no grouping (consecutive rows); pose tables pass grid tiles
PROBE = 2  # blocks whose rows propose the first exactly scored row
DENSE = 1 / 32  # a query whose blocks leave more than this share of the rows in play bounds every row in one product
# Margin on the bounds (squared unit distances, at most 4) for float64 rounding, worst case (Higham's gamma_n =
# n 2^-53 / (1 - n 2^-53) for an n-term dot product). A query's projection a_j = q.P_j / ||q|| - P_j.m is off by at
# most 3 gamma_D < 1.1e-12 (unit vectors, D = 3072); so ||a||^2 over F <= 256 directions by 2 * 1.1e-12 * ||a||_1
# < 7.1e-11, and ||q/||q|| - m||^2 by < 1.5e-12: the residual's square s^2, their difference, by delta < 7.5e-11, and
# s (the square root) by at most sqrt(delta) < 8.7e-6, which moves L by at most 2 * 2 * 8.7e-6 < 3.5e-5. The
# block bound uses e^2 - 1e-12 (e^2 = ||z(q) - c||^2 by expansion, off by less than gamma_(d+3) * 16 < 2e-13), and
# the rows' coordinates and the exact distances are float64 values off by about 1e-13. 1e-4 covers the sum about
# three times; it lets a few more rows (a third of a row per query on the default tables) reach the exact step.
SLACK = 1e-4
CHUNK = 4096  # rows per float64 step of the build: (CHUNK, D) float64 = 100 MB at D = 3072
DENSE_BATCH = 64  # queries per product with every row: (DENSE_BATCH, N) float64
# A query whose coarse bound leaves more than this share of the rows in play (a blurred, grey or flat frame: about
# equally far from many poses) takes the fine bound of every row at once (_fine_all, one float64 product) instead of a
# gather per pair, and then, if still left with many rows, the float32 screen of every row (_screen): its exact step
# would gather hundreds of rows in float64 (a pixel average blurred by 3 px took 7.6 ms on the DoF 2 table, 2.2 ms
# now, against 1.2 ms for the bare float32 product; 1/64 timed as well as 1/16 and 1/256).
SCREEN = 1 / 64
# ... after the fine bound of every row (_fine_all) a query left with more than this share of the rows (a grey or flat
# frame) is screened: an exact row costs about 1/256 of the screen's product with every row (10-15 us against 2 ms on
# the DoF 2 table; timed best of 1/128, 1/256 and 1/512). A blend blurred by 1 px keeps about 40 rows of 32,400.
CROWD = 1 / 256
SCREEN_K = 256  # terms per float32 partial dot product of the screen (its rounding bound: below)
SCREEN_BATCH = 64  # queries per screen product: (SCREEN_BATCH, N) float64 dots
# Rows whose cosine, by the screen's bounds (screen_error), may be within this of the best row's are scored exactly
# (the exact step's own float64 rounding is below 1e-12): every row as near as the nearest, or nearer, is scored.
SCREEN_MARGIN = 1e-9
# (query, row) pairs per exact step: (PAIRS, D) float64 = 6 MB at D = 3072, which the allocator reuses without page
# faults (50 MB steps took twice the wall time, in page faults of fresh memory).
PAIRS = 256
# A table of at most SMALL * D rows (the DoF 1 table: 720 rows at D = 3072) takes the small route (_small_pairs):
# its first row from a rough float32 z on SMALL_DIMS directions against every row at once (N (k + 1) multiply-adds a
# query, no blocks), and the rows left in play by the table's row-to-row distances (N^2 float64: 4 MB at N = 720).
# 16 directions find a copied frame's own row (8 do too, but propose worse first rows for blurred frames).
SMALL = 1.0
SMALL_DIMS = 16
# The small route's margin on 2 d1: every row whose computed distance is at most the first row's has ||q - u||^2 <=
# 2 d1 + 4e-12 (the exact distances are within 1e-12), and its bounds carry their own rounding (_small_bound).
SMALL_SLACK = 1e-9


def tiles(shape: tuple[int, ...], side: int) -> np.ndarray:
    """Blocks of a table whose rows are a row-major grid of `shape` (a pose grid): side^k tiles of grid
    neighbours, (K, side^k) int64 row indices. A tile that overhangs the grid's end repeats its last row or
    column (a repeated row changes nothing: its bound and distance are the same)."""
    starts = np.stack(np.meshgrid(*[np.arange(0, n, side) for n in shape], indexing="ij"), -1).reshape(-1, len(shape))
    offsets = np.stack(np.meshgrid(*[np.arange(side)] * len(shape), indexing="ij"), -1).reshape(-1, len(shape))
    cells = np.minimum(starts[:, None] + offsets[None], np.asarray(shape) - 1)  # (K, side^k, k) grid coordinates
    return np.ravel_multi_index(tuple(np.moveaxis(cells, -1, 0)), shape).astype(np.int64)


def build(rows: np.ndarray, dims: int = DIMS, groups: np.ndarray | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """The search arrays of a table, rows (N, D) uint8 (any non-negative pixels), grouped into blocks `groups`
    (K, G) row indices (every row in at least one block; None: consecutive runs of BLOCK rows). float64:
    mean (D,), basis (F, D) (F = FINE_DIMS directions, strongest first), coords (N, F + 1) = z(u) per row on all
    F, and on the first d = `dims`: the blocks' centres (K, d + 1) and radii (K,); groups (K, G).

    The basis is torch.pca_lowrank's (randomized, seeded here, so the same table gives the same bytes);
    any orthonormal basis keeps the search exact, a better one only makes it faster.
    """
    n = len(rows)
    if groups is None:
        groups = np.minimum(np.arange(0, n, BLOCK)[:, None] + np.arange(BLOCK), n - 1)
    groups = np.asarray(groups, dtype=np.int64)
    if groups.ndim != 2 or groups.min() < 0 or groups.max() >= n or len(np.unique(groups)) != n:
        raise ValueError(f"groups must be (K, G) row indices covering all {n} rows")
    x = torch.from_numpy(np.ascontiguousarray(rows)).float()  # (N, D)
    x /= x.norm(dim=1, keepdim=True).clamp_min(1e-12)  # unit rows (an all-black row stays zero)
    x -= x.mean(dim=0)
    fine = max(1, min(max(dims, FINE_DIMS), n - 1, x.shape[1]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, v = torch.pca_lowrank(x, q=fine, center=False, niter=2)  # (D, fine): the directions, float32 is enough
    del x
    basis = torch.linalg.qr(v.double())[0].T.contiguous()  # (fine, D) orthonormal rows, float64, strongest first
    chunks = torch.from_numpy(np.ascontiguousarray(rows)).split(CHUNK)  # float64 a chunk at a time: 100 MB each
    mean = sum(_unit64(c).sum(dim=0) for c in chunks) / n  # (D,)
    coords = []
    for c in chunks:
        u = _unit64(c) - mean
        a = u @ basis.T  # (n, fine)
        coords.append(torch.cat([a, (u - a @ basis).norm(dim=1, keepdim=True)], dim=1))
    coords = torch.cat(coords)  # (N, fine + 1): z(u) on every direction
    members = coarse(coords, min(dims, fine))[torch.from_numpy(groups)]  # (K, G, d + 1)
    centres = members.mean(dim=1)  # (K, d + 1)
    radii = (members - centres[:, None]).norm(dim=2).max(dim=1).values * (1 + 1e-12)  # rounded up
    return {"mean": mean.numpy(), "basis": basis.numpy(), "coords": coords.numpy(), "centres": centres.numpy(),
            "radii": radii.numpy(), "groups": groups}


def coarse(z: torch.Tensor, d: int) -> torch.Tensor:
    """z on the first d directions, (..., F + 1) -> (..., d + 1): the directions left out join the residual."""
    return torch.cat([z[..., :d], z[..., d:].norm(dim=-1, keepdim=True)], dim=-1)


def _unit64(chunk: torch.Tensor) -> torch.Tensor:
    """uint8 rows (n, D) -> float64 unit rows (n, D); an all-black row stays zero."""
    u = chunk.double()
    return u / u.norm(dim=1, keepdim=True).clamp_min(1e-300)


ARRAYS = ("mean", "basis", "coords", "centres", "radii", "groups")  # what build() returns and a cache holds


@dataclass(frozen=True)
class Index:
    """A table's rows and search arrays: the bounds run in torch on one device, the exact step on the CPU."""

    rows: np.ndarray  # (N, D) uint8, the exact step reads these
    norms: np.ndarray  # (N,) float64 norm of each row / 255
    mean: torch.Tensor  # (D,) float64
    basis: torch.Tensor  # (F, D) float64, the first d rows make the coarse bound
    lift: torch.Tensor  # (F + 1, D) float64: the mean, then the basis, so that lift[:k + 1] serves k directions
    basis_mean: torch.Tensor  # (F,) float64 P m
    mean_sq: torch.Tensor  # () float64 ||m||^2
    coords: torch.Tensor  # (N, F + 1) float64 z(u) on all F directions: the fine bound
    near: torch.Tensor  # (N, d + 1) float64 z(u) on the first d: the coarse bound
    near_sq: torch.Tensor  # (N,) float64 ||z(u)||^2 of `near`
    coord_sq: torch.Tensor  # (N,) float64 ||z(u)||^2 of `coords`
    centres: torch.Tensor  # (K, d + 1) float64
    centre_sq: torch.Tensor  # (K,) float64 ||c||^2
    radii: torch.Tensor  # (K,) float64
    groups: torch.Tensor  # (K, G) int64
    small: bool  # at most SMALL * D rows: the small route (_small_pairs); its arrays below are None on the blocks' route
    rows64: np.ndarray | None  # (N, D) float64 pixels: the first rows' exact distances
    apart: np.ndarray | None  # (N, N) float64 ||u - v||^2 of every two unit rows (cosines in float64, within 1e-11)
    gap: np.ndarray | None  # (N,) float64 the least of apart over the other rows (a repeated frame: 0)
    lift32: torch.Tensor | None  # (D, k + 1) float32 lift[:k + 1] transposed, k = SMALL_DIMS: the rough z of step 1
    basis_mean32: np.ndarray | None  # (k,) float32 P m on the first k
    mean_sq32: float | None  # ||m||^2
    near32: torch.Tensor | None  # (N, k + 1) float32 z(u) on the first k directions, and its squared norms (N,)
    near_sq32: torch.Tensor | None  # (on the CPU: step 1's small steps run in numpy; torch's product is the faster)
    float_rows: dict = field(default_factory=dict, repr=False, compare=False)  # the screen's operand, made once

    def screen_rows(self) -> torch.Tensor:
        """The table's pixels as SCREEN_K-column blocks (J, N, SCREEN_K) float32 on the CPU (0..255, exact; the last
        block zero-padded), made on first use: 4 bytes per pixel (398 MB for the DoF 2 table), so only a search
        that screens a query pays for it."""
        if "cpu" not in self.float_rows:
            n, d = self.rows.shape
            j = -(-d // SCREEN_K)
            padded = torch.zeros(n, j * SCREEN_K)
            padded[:, :d] = torch.from_numpy(self.rows)
            self.float_rows["cpu"] = padded.view(n, j, SCREEN_K).transpose(0, 1).contiguous()
        return self.float_rows["cpu"]

    @classmethod
    def on(cls, rows: np.ndarray, arrays: dict[str, np.ndarray], device: torch.device) -> Index:
        r = np.ascontiguousarray(rows)
        norms = torch.cat([c.double().norm(dim=1) for c in torch.from_numpy(r).split(CHUNK)]).numpy() / 255.0
        t = {k: torch.from_numpy(np.asarray(arrays[k])).to(device, torch.int64 if k == "groups" else torch.float64)
             for k in ARRAYS}
        near = coarse(t["coords"], t["centres"].shape[1] - 1)
        lift = torch.cat([t["mean"][None], t["basis"]])  # (F + 1, D)
        small = len(r) <= SMALL * r.shape[1]
        extra = _small_arrays(r, t, lift) if small else dict.fromkeys(SMALL_ARRAYS)
        return cls(r, norms, lift=lift, basis_mean=t["basis"] @ t["mean"],
                   mean_sq=t["mean"] @ t["mean"], near=near, near_sq=(near * near).sum(dim=1),
                   coord_sq=(t["coords"] ** 2).sum(dim=1),
                   centre_sq=(t["centres"] ** 2).sum(dim=1), small=small, **extra, **t)


SMALL_ARRAYS = ("rows64", "apart", "gap", "lift32", "basis_mean32", "mean_sq32", "near32", "near_sq32")


def _small_arrays(rows: np.ndarray, t: dict[str, torch.Tensor], lift: torch.Tensor) -> dict:
    """The small route's arrays of a table, rows (N, D) uint8 (Index's fields of the same names)."""
    k = min(SMALL_DIMS, len(t["basis"]))
    rows64 = rows.astype(np.float64)
    unit = rows64 / np.maximum(np.linalg.norm(rows64, axis=1, keepdims=True), 1e-300)
    apart = np.maximum(2.0 - 2.0 * (unit @ unit.T), 0.0)  # (N, N)
    np.fill_diagonal(apart, np.inf)
    gap = apart.min(axis=1)
    np.fill_diagonal(apart, 0.0)
    near = coarse(t["coords"], k)  # (N, k + 1)
    near_sq = (near * near).sum(dim=1)
    return {"rows64": rows64, "apart": apart, "gap": gap, "lift32": lift[:k + 1].T.float().contiguous(),
            "basis_mean32": (t["basis"][:k] @ t["mean"]).float().cpu().numpy(), "mean_sq32": float(t["mean"] @ t["mean"]),
            "near32": near.float().cpu(), "near_sq32": near_sq.float().cpu()}


def exact_distance(index: Index, queries: np.ndarray, norms: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Cosine distance 1 - cos in float64 of queries (B, D) float64 (norms (B,)) to table rows `rows` (B, C): (B, C)."""
    gathered = index.rows[rows].astype(np.float64)  # (B, C, D) pixels in 0..255
    dot = np.matmul(queries[:, None, :], gathered.transpose(0, 2, 1))[:, 0]  # (B, C): one BLAS product per query
    return cosine_distance(dot, norms, index.norms[rows])


def cosine_distance(dot: np.ndarray, norms: np.ndarray, row_norms: np.ndarray) -> np.ndarray:
    """1 - cos from the dot products (B, C) of queries (norms (B,)) with uint8-scale rows (norms / 255: (B, C) or
    (C,)): the one formula of both exact routes, so they give the same float64 distance for the same dot."""
    return 1.0 - dot / (255.0 * norms[:, None] * np.maximum(row_norms, 1e-300))


def _nearest_of(index: Index, queries: np.ndarray, norms: np.ndarray, qi: np.ndarray, ri: np.ndarray,
                arg: np.ndarray, best: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exactly score the (query, row) pairs qi, ri (P,) (repeats allowed) and fold them into each query's nearest
    so far, arg (B,) at distance best (B,): the nearest, the lowest row among equals, (B,) int64 and float64."""
    n = len(index.rows)
    key = np.unique(qi * n + ri)  # sorted by query, then row; repeats dropped
    qi, ri = np.divmod(key, n)
    arg, best = arg.copy(), best.copy()
    count = np.bincount(qi, minlength=len(arg))  # rows per query
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    # Queries in order of their row count, as many at a time as fit PAIRS rows when padded to the largest count
    # with their own first row (a repeat changes neither the minimum nor the lowest index): (batch, C) per step;
    # a query with more than PAIRS rows alone, PAIRS of its rows at a time.
    order = np.argsort(count, kind="stable")
    order = order[count[order] > 0]
    width = count[order]
    i = 0
    while i < len(order):
        j = i + 1
        while j < len(order) and (j + 1 - i) * width[j] <= PAIRS:
            j += 1
        q, c = order[i:j], min(int(width[j - 1]), PAIRS)
        for piece in range(0, int(width[j - 1]), PAIRS):  # one piece, unless a query has more than PAIRS rows
            pos = start[q][:, None] + np.minimum(piece + np.arange(c)[None], count[q][:, None] - 1)  # (batch, C)
            _merge(arg, best, q, exact_distance(index, queries[q], norms[q], ri[pos]), ri[pos])
        i = j
    return arg, best


def _merge(arg: np.ndarray, best: np.ndarray, q: np.ndarray, distance: np.ndarray, rows: np.ndarray) -> None:
    """Fold the exact distances (n, C) of rows (n, C) into the nearest so far of queries q (n,): in place, a lower
    distance wins, and among equal distances the lower row."""
    low = distance.min(axis=1)
    a = np.where(distance == low[:, None], rows, np.iinfo(np.int64).max).min(axis=1)
    better = (low < best[q]) | ((low == best[q]) & (a < arg[q]))
    arg[q] = np.where(better, a, arg[q])
    best[q] = np.where(better, low, best[q])


def search(index: Index, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Nearest table row of each query (B, D) float (non-zero) by cosine: row (B,) int64, cosine distance
    1 - cos (B,) float64, and how many exact distances it took beyond the first row of each query."""
    b = len(queries)
    if index.small:
        # A small table: steps 1 and 2 over every row at once (_small_pairs)
        q_np, norms_np, first_np, d1, qi, ri = _small_pairs(index, queries)
        if not len(qi):  # every first row alone in reach (table frames): the answers, as the steps below leave them
            return (torch.from_numpy(first_np).to(queries.device),
                    torch.from_numpy(d1).clamp_min(0.0).to(queries.device), 0)
        norms, first = torch.from_numpy(norms_np).to(queries.device), torch.from_numpy(first_np).to(queries.device)
        limit = torch.from_numpy(2.0 * d1 + SLACK).to(queries.device)  # (B,) the fine bound's, as on the blocks' route
        # no step 3: a small table's product with every row costs about what a call's fixed steps do (blurred DoF 1
        # frames took 1.6x longer through it)
        heavy = torch.zeros(b, dtype=torch.bool, device=queries.device)
    else:
        d = index.near.shape[1] - 1
        q = queries.double()
        norms = q.norm(dim=1)  # (B,)
        z = _project(index, q, norms, d)  # (B, d + 1)
        zsq = (z * z).sum(dim=1)  # (B,)
        # e^2 = ||z(q) - c||^2 of every block by expansion, less the most its rounding adds (gamma_(d+3) * 16 < 2e-13)
        e2 = torch.addmm(index.centre_sq[None] + zsq[:, None], z, index.centres.T, alpha=-2.0).sub_(1e-12)  # (B, K)
        # 1. The first row: the lowest row bound among the rows of the PROBE blocks with the nearest centres.
        probe = index.groups[e2.topk(min(PROBE, len(index.groups)), dim=1, largest=False).indices].flatten(1)
        first = probe.gather(1, _bound(z, zsq, index.near[probe], index.near_sq[probe]).argmin(dim=1, keepdim=True))
        first = first[:, 0]  # (B,)
        q_np, norms_np, first_np = q.cpu().numpy(), norms.cpu().numpy(), first.cpu().numpy()
        d1 = np.concatenate([exact_distance(index, q_np[i:i + PAIRS], norms_np[i:i + PAIRS],
                                            first_np[i:i + PAIRS, None])[:, 0] for i in range(0, b, PAIRS)])
        # 2. Every other row whose bound does not exceed ||q - u1||^2 = 2 d1 (plus the margin): block first, then
        # row, then (a query left with many) the fine bound.
        limit = torch.from_numpy(2.0 * d1 + SLACK).to(z.device)  # (B,)
        # A block's rows all have L >= (e - rho)^2 when e >= rho: it can hold a row with L <= limit only if
        # e <= rho + sqrt(limit), i.e. e^2 <= (rho + sqrt(limit))^2 (compared squared: no square root of (B, K))
        passing = e2 <= (index.radii[None] + limit.sqrt()[:, None]).square_()  # (B, K)
        qi, ri, heavy = _candidates(index, z, zsq, passing, limit)
    # 3. A query with more than SCREEN of the rows in play: the fine bound of every row at once, and if that leaves
    # it with as many, every row through the float32 screen.
    qi, ri = _refine(index, queries, norms, qi, ri, limit, first)
    extra = []  # (query, row) pairs (P,) x2 of the heavy queries, numpy
    if heavy.any():
        fq, fr, crowded = _fine_all(index, queries, norms, torch.nonzero(heavy).flatten(), limit, first)
        extra.append((fq, fr))
        if len(crowded):
            extra.append(_screen(index, queries, norms_np, crowded))
    other = ri != first[qi]
    qi, ri = qi[other].cpu().numpy(), ri[other].cpu().numpy()
    for sq, sr in extra:
        other = sr != first_np[sq]
        qi, ri = np.concatenate([qi, sq[other]]), np.concatenate([ri, sr[other]])
    scored = len(ri)
    arg, best = _nearest_of(index, q_np, norms_np, qi, ri, first_np, d1)
    return (torch.from_numpy(arg).to(queries.device), torch.from_numpy(best).clamp_min(0.0).to(queries.device),
            scored)


def _small_pairs(index: Index, queries: torch.Tensor) -> tuple[np.ndarray, ...]:
    """The small route's steps 1 and 2 for queries (B, D) float: q_np (B, D) float64, norms (B,), the first row (B,)
    and its distance d1 (B,) (exact_distance's formula), and the (query, row) pairs qi, ri (P,) torch int64 of every
    row that no bound rules out (the first rows among them).

    1. The first row: the nearest by a rough z (a float32 product, no bound needed: any row would do).
    2. A row u as near as u1 (computed d <= d1) has ||q - u||^2 <= 2 d1 + 4e-12 (the exact distances are within
       1e-12 of 1 - cos), and ||q - u1||^2 too, so by the triangle inequality ||u - u1||^2 <= 4 (2 d1 +
       SMALL_SLACK) =: radius. apart holds ||u - v||^2 within 1e-11 (2 - 2 cos of float64 unit rows: the cosine
       within gamma_D + the unit rows' norms, < 1e-12), so a row with apart > radius + 1e-11 is ruled out, and a
       query whose first row's gap (the least apart to another row) exceeds that has no row to score but its first:
       a query that is a table frame, or within a small share of a grid step of one. The others bound every row on
       DIMS directions in float64 too (_small_bound)."""
    n = len(index.rows)
    q = queries.double()  # (B, D)
    norms = q.norm(dim=1)  # (B,) torch's float64 norm, as on the blocks' route
    # 1. z roughly (a float32 product: unit q . m and q . P_j / ||q||; numpy for the small steps), the nearest row by it
    t = ((queries.to(torch.float32) @ index.lift32) / norms.to(torch.float32)[:, None]).cpu().numpy()  # (B, k + 1)
    a = t[:, 1:] - index.basis_mean32  # (B, k)
    z = np.concatenate([a, np.sqrt(np.maximum(1.0 + index.mean_sq32 - 2.0 * t[:, :1] - (a * a).sum(axis=1, keepdims=True),
                                              0.0, dtype=np.float32))], axis=1)  # (B, k + 1)
    first = torch.addmm(index.near_sq32, torch.from_numpy(z), index.near32.T, alpha=-2.0).numpy().argmin(axis=1)  # (B,)
    # its exact distance: np.matmul of the float64 query and row (exact_distance's formula), one pair at a time
    q_np, norms = q.cpu().numpy(), norms.cpu().numpy()  # (B, D), (B,)
    dot = np.array([q_np[i] @ index.rows64[f] for i, f in enumerate(first)])[:, None]  # (B, 1)
    d1 = cosine_distance(dot, norms, index.norms[first, None])[:, 0]
    # 2. the queries whose first row has another row within the triangle inequality's radius
    radius = 4.0 * (2.0 * np.maximum(d1, 0.0) + SMALL_SLACK) + 1e-11  # (B,) squared
    near = np.flatnonzero(radius >= index.gap[first])  # (H,)
    if not len(near):
        empty = torch.zeros(0, dtype=torch.int64, device=queries.device)
        return q_np, norms, first, d1, empty, empty
    in_reach = index.apart[first[near]] <= radius[near, None]  # (H, N) the rows the triangle inequality leaves
    # ... and the bound on DIMS directions
    in_reach &= _small_bound(index, q[torch.from_numpy(near).to(q.device)], torch.from_numpy(norms[near]), d1[near])
    qi, ri = np.divmod(np.flatnonzero(in_reach), n)  # (P,) x2
    dev = queries.device
    return q_np, norms, first, d1, torch.from_numpy(near[qi]).to(dev), torch.from_numpy(ri).to(dev)


def _small_bound(index: Index, q: torch.Tensor, norms: torch.Tensor, d1: np.ndarray) -> np.ndarray:
    """Which rows (H, N) bool may be as near to queries q (H, D) float64 (norms (H,)) as their first rows, at
    distance d1 (H,): L(q, u) <= 2 d1 + SMALL_SLACK, on k = DIMS directions (the coarse bound's `near`).

    z = _project's coordinates, within err = sqrt(e_a^2 + h^2) <= e_a + h of z(q): a_j off by at most g = 3 gamma_D
    (SLACK's budget: 1.1e-12 at D = 3072), a by e_a = g sqrt(k), s^2 by at most Delta = 4 g sqrt(k) + 2 g (||a|| <= 2;
    ||q/||q|| - m||^2 by 2 g), so s by at most h = sqrt(Delta) (6.1e-6 at k = 64; a square root: s may be near 0);
    1e-12 more covers the rows' float64 z(u) (off by about 1e-13) and the float64 steps of s. A row with L(q, u) <=
    2 d1 + SMALL_SLACK has ||z - z(u)|| <= reach = sqrt(2 d1 + SMALL_SLACK) + err, i.e. ||z(u)||^2 - 2 z . z(u) <=
    reach^2 - ||z||^2; by expansion in float64 both sides are within 5e-13 of their values (gamma_(k+3) * 16, as in
    _bound), so a row is ruled out where the left exceeds the right by 1e-12."""
    k, d = index.near.shape[1] - 1, q.shape[1]
    z = _project(index, q, norms.to(q.device), k)  # (H, k + 1)
    g = 3 * d * 2.0 ** -53 / (1 - d * 2.0 ** -53)
    err = g * k ** 0.5 + (4 * g * k ** 0.5 + 2 * g) ** 0.5 + 1e-12
    reach = np.sqrt(2.0 * np.maximum(d1, 0.0) + SMALL_SLACK) + err  # (H,)
    right = reach * reach + 1e-12 - (z * z).sum(dim=1).cpu().numpy()  # (H,)
    return torch.addmm(index.near_sq, z, index.near.T, alpha=-2.0).cpu().numpy() <= right[:, None]


def _screen(index: Index, queries: torch.Tensor, norms: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, ...]:
    """(query, row) pairs (P,) x2 of every row that may be as near as the nearest, for the queries `which` (H,) of
    queries (B, D) float with float64 norms (B,): every row's dot product by float32 products (screen_dots), within a
    relative screen_error of the true one. A row stays if its cosine's upper bound reaches the best lower bound of
    the query's rows, less SCREEN_MARGIN; the exact step then scores these few."""
    table = index.screen_rows()  # (J, N, K) float32 pixels
    error = screen_error(index.rows.shape[1])
    row_norms = np.maximum(index.norms, 1e-300) * 255.0  # (N,) ||u|| (as cosine_distance clamps a black row)
    qi, ri = [], []
    with _ieee_float32():
        for part in np.array_split(which, -(-len(which) // SCREEN_BATCH)):
            q = queries[torch.from_numpy(part).to(queries.device)].cpu()  # (n, D)
            dots = screen_dots(q.float(), table)  # (n, N) q . u
            # The rounding's scale: q . u itself for non-negative queries, |q| . u for one with a negative pixel.
            scale = screen_dots(q.abs().float(), table) if bool((q < 0).any()) else dots
            slack = error * scale  # (n, N) the most each dot is off by
            length = norms[part][:, None] * row_norms[None]  # (n, N) ||q|| ||u||
            low, high = (dots - slack) / length, (dots + slack) / length  # (n, N) bounds on each row's cosine
            near_q, near_r = np.nonzero(high >= low.max(axis=1, keepdims=True) - SCREEN_MARGIN)
            qi.append(part[near_q])
            ri.append(near_r)
    return np.concatenate(qi), np.concatenate(ri)


def screen_error(d: int) -> float:
    """The screen's worst relative error on a dot product of D = d non-negative terms (of its terms' magnitudes in
    general): each float32 partial sum of SCREEN_K products is off by at most gamma_SCREEN_K of its terms' magnitudes
    (gamma_n = n u / (1 - n u), u = 2^-24: Higham's bound, for any summation order), their float32 sum over the
    J = d / SCREEN_K blocks by gamma_J more, the query's rounding to float32 by u per term, and the float64 results'
    rounding by far less; 2u more covers those: (256 + 12 + 2) u = 1.6e-5 at D = 3072."""
    u = 2.0 ** -24

    def gamma(n: int) -> float:
        return n * u / (1 - n * u)

    return gamma(SCREEN_K) + gamma(-(-d // SCREEN_K)) + 2 * u


def screen_dots(q: torch.Tensor, table: torch.Tensor) -> np.ndarray:
    """Dot products of queries q (n, D) float32 with the screen's rows (J, N, K) float32: per block of K columns one
    float32 product (the bmm), summed over the J blocks in float32, CHUNK rows at a time -> (n, N) float64."""
    j, n_rows, k = table.shape
    padded = torch.zeros(len(q), j * k)
    padded[:, :q.shape[1]] = q
    blocks = padded.view(len(q), j, k).transpose(0, 1)  # (J, n, K)
    out = torch.empty(len(q), n_rows)
    for start in range(0, n_rows, CHUNK):
        out[:, start:start + CHUNK] = torch.bmm(blocks, table[:, start:start + CHUNK].transpose(1, 2)).sum(dim=0)
    return out.double().numpy()


class _ieee_float32:
    """Float32 products at full float32 precision while the screen runs (torch may trade it for speed when a user
    sets torch.set_float32_matmul_precision('high' or 'medium'): TF32 or bfloat16 products break screen_error)."""

    def __enter__(self):
        self.was = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")

    def __exit__(self, *exc):
        torch.set_float32_matmul_precision(self.was)


def _project(index: Index, q: torch.Tensor, norms: torch.Tensor, k: int) -> torch.Tensor:
    """z of queries (B, D) float64 with norms (B,) on the first k directions: (B, k + 1). One product with the
    mean and the directions, no centred copy of the queries; the residual's norm by Pythagoras (SLACK's budget)."""
    t = (q @ index.lift[:k + 1].T) / norms[:, None]  # (B, k + 1): unit q . m, unit q . P_j
    a = t[:, 1:] - index.basis_mean[:k]  # (B, k)
    s = (1.0 - 2.0 * t[:, 0] + index.mean_sq - (a * a).sum(dim=1)).clamp_min(0.0).sqrt()  # ||unit q - m||^2 - ||a||^2
    return torch.cat([a, s[:, None]], dim=1)


def _refine(index: Index, q: torch.Tensor, norms: torch.Tensor, qi: torch.Tensor, ri: torch.Tensor,
            limit: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs qi, ri (P,) less those the fine bound (all F directions) rules out, for the queries (B, D) (float,
    float64 norms (B,)) with more than REFINE pairs (the others keep theirs: projecting them would cost more than
    scoring their few rows); limit (B,) 2 d1 + SLACK (the fine projection is float64, SLACK covers its rounding).

    A query's first row (B,) came from a coarser bound; its pair with the lowest fine bound is often nearer. So that
    row is scored exactly too (unless it is the first), and the query's limit becomes the lower of the two, 2 d +
    SLACK: a row as near as the nearest is as near as either, so it stays (that row too: its fine bound is at most
    2 d + SLACK)."""
    heavy = torch.nonzero(torch.bincount(qi, minlength=len(q)) > REFINE).flatten()  # (H,)
    if not len(heavy) or index.coords.shape[1] == index.near.shape[1]:
        return qi, ri
    at = torch.full((len(q),), -1, dtype=torch.int64, device=qi.device)
    at[heavy] = torch.arange(len(heavy), device=qi.device)  # query -> its row of zf
    qh = q[heavy].double()  # (H, D)
    zf = _project(index, qh, norms[heavy], len(index.basis))  # (H, F + 1)
    zf_sq = (zf * zf).sum(dim=1)
    keep = at[qi] < 0  # (P,) pairs of light queries stay
    part = torch.nonzero(~keep).flatten()  # (Ph,) pairs of the heavy queries
    h = at[qi[part]]  # (Ph,) their rows of zf
    bound = torch.cat([_bound(zf[h[i]], zf_sq[h[i]], index.coords[ri[part[i]]][:, None],  # (n, F + 1) float64
                              index.coord_sq[ri[part[i]]][:, None])[:, 0]  # gathers, 2 MB each
                       for i in torch.arange(len(part), device=qi.device).split(PAIRS * 4)])  # (Ph,)
    low = torch.full((len(heavy),), torch.inf, dtype=bound.dtype, device=bound.device).scatter_reduce_(
        0, h, bound, "amin")  # (H,) each heavy query's lowest fine bound
    lowest = torch.nonzero(bound == low[h]).flatten()  # pairs at it (one or more per heavy query)
    proposal = torch.empty(len(heavy), dtype=torch.int64, device=qi.device)
    proposal[h[lowest]] = ri[part[lowest]]  # (H,) one of them
    tight = _tightened(index, qh, norms[heavy], limit[heavy], proposal, first[heavy])  # (H,)
    keep[part] = bound <= tight[h]
    return qi[keep], ri[keep]


def _tightened(index: Index, q: torch.Tensor, norms: torch.Tensor, limit: torch.Tensor, proposal: torch.Tensor,
               first: torch.Tensor) -> torch.Tensor:
    """The limits (n,) of queries q (n, D) float64 (norms (n,)) after their proposed rows (n,) (each one's row of
    lowest fine bound) are scored exactly: the lower of limit (n,) and 2 d + SLACK, where the proposal is not the
    first row (n,) (whose distance the limit already holds)."""
    new = torch.nonzero(proposal != first).flatten()  # (n',) proposals other than the first row
    tight = limit.clone()
    if len(new):
        d = exact_distance(index, q[new].cpu().numpy(), norms[new].cpu().numpy(), proposal[new].cpu().numpy()[:, None])
        tight[new] = torch.minimum(tight[new], torch.from_numpy(2.0 * d[:, 0] + SLACK).to(limit.device))
    return tight


def _fine_all(index: Index, queries: torch.Tensor, norms: torch.Tensor, which: torch.Tensor, limit: torch.Tensor,
              first: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fine bound (all F directions) of every row for the queries `which` (H,) of queries (B, D) float (float64
    norms (B,)) that the coarse bound left with more than SCREEN of the rows: one float64 product with every row's
    coordinates, DENSE_BATCH queries at a time, not a gather per pair. As in _refine, each query's row of lowest
    fine bound is scored exactly (unless it is its first row) and its limit (B,) becomes the lower of the two.
    Returns the (query, row) pairs (P,) x2 (numpy) within the limit, and the queries (S,) left with more than CROWD
    of the rows by it (a grey or flat frame: their pairs are left out, for the screen)."""
    qi, ri, crowded = [], [], []
    for i in which.split(DENSE_BATCH):
        q = queries[i].double()  # (n, D)
        zf = _project(index, q, norms[i], len(index.basis))  # (n, F + 1)
        bound = _bound_every(zf, (zf * zf).sum(dim=1), index.coords, index.coord_sq)  # (n, N)
        tight = _tightened(index, q, norms[i], limit[i], bound.argmin(dim=1), first[i])  # (n,)
        within = bound <= tight[:, None]  # (n, N)
        many = within.sum(dim=1) > CROWD * len(index.rows)  # (n,)
        crowded.append(i[many].cpu().numpy())
        qd, rd = torch.nonzero(within[~many], as_tuple=True)
        qi.append(i[~many][qd].cpu().numpy())
        ri.append(rd.cpu().numpy())
    return np.concatenate(qi), np.concatenate(ri), np.concatenate(crowded)


def _candidates(index: Index, z: torch.Tensor, zsq: torch.Tensor, passing: torch.Tensor,
                limit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(query, row) pairs (P,) x2 of every row with a row bound <= limit, queries z (B, d + 1) with squared norms
    zsq (B,), limit (B,), `passing` (B, K) the blocks that may hold such rows: through those blocks' rows, or (a
    query for which more than DENSE of the rows lie in them: a blurred or grey frame, near many poses) through
    one product with every row; and which queries (B,) bool have more than SCREEN of the rows in play: their pairs
    are left out (the screen scores them against every row)."""
    n = len(index.near)
    heavy = torch.zeros(len(z), dtype=torch.bool, device=z.device)
    dense = passing.sum(dim=1) * index.groups.shape[1] > DENSE * n  # (B,)
    qb, kb = torch.nonzero(passing, as_tuple=True)  # (P,) query, block
    if dense.any():
        qb, kb = qb[~dense[qb]], kb[~dense[qb]]
    rows = index.groups[kb]  # (P, G)
    keep = _bound(z[qb], zsq[qb], index.near[rows], index.near_sq[rows]) <= limit[qb][:, None]  # (P, G)
    qi, ri = [qb[:, None].expand_as(rows)[keep]], [rows[keep]]
    for i in torch.nonzero(dense).flatten().split(DENSE_BATCH):
        within = _bound_every(z[i], zsq[i], index.near, index.near_sq) <= limit[i][:, None]  # (n, N)
        many = within.sum(dim=1) > SCREEN * n  # (n,)
        heavy[i[many]] = True
        qd, rd = torch.nonzero(within[~many], as_tuple=True)
        qi.append(i[~many][qd])
        ri.append(rd)
    qi, ri = torch.cat(qi), torch.cat(ri)
    heavy |= torch.bincount(qi, minlength=len(z)) > SCREEN * n  # ... and those the blocks left with as many
    light = ~heavy[qi]
    return qi[light], ri[light], heavy


def _bound_every(zq: torch.Tensor, zq_sq: torch.Tensor, zu: torch.Tensor, zu_sq: torch.Tensor) -> torch.Tensor:
    """L of queries zq (n, k + 1) (squared norms (n,)) to every row zu (N, k + 1) (squared norms (N,)) -> (n, N): by
    expansion, one product, less 1e-12 for its rounding (as in _bound)."""
    return torch.addmm(zu_sq[None] + zq_sq[:, None], zq, zu.T, alpha=-2.0) - 1e-12


def _bound(zq: torch.Tensor, zq_sq: torch.Tensor, zu: torch.Tensor, zu_sq: torch.Tensor) -> torch.Tensor:
    """L = ||z(q) - z(u)||^2 of queries zq (n, k + 1) (squared norms (n,)) to their rows zu (n, C, k + 1) (squared
    norms (n, C)) -> (n, C): by expansion, one batched product, less 1e-12, the most its rounding can add (gamma_(k+3)
    * 16 < 5e-13 for k <= 256), so it stays a lower bound as computed."""
    return zq_sq[:, None] + zu_sq - 2.0 * torch.bmm(zu, zq[:, :, None])[..., 0] - 1e-12
