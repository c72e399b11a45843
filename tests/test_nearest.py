"""The exact pose search (benchmarks.scoring.nearest) returns brute force's nearest table frame, ties included."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from benchmarks.scoring import nearest, pose
from ibdata import h5format
from render.dataset import render_dataset
from render.presets import RenderConfig


def brute_force(queries: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The definition: highest float64 cosine over every row, the first (lowest) index among equals."""
    u = rows.astype(np.float64) / 255.0
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-300)
    q = queries.astype(np.float64)
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ u.T  # (B, N)
    return cos.argmax(axis=1), 1.0 - cos.max(axis=1)


def float32_product(queries: np.ndarray, table: pose.PoseTable) -> np.ndarray:
    """What scoring did before the search: one float32 product with the unit table rows, argmax."""
    q = torch.from_numpy(queries.astype(np.float32))
    return ((q / q.norm(dim=1, keepdim=True)) @ table.unit_rows(torch.device("cpu")).T).argmax(dim=1).numpy()


@pytest.fixture(scope="module")
def dof2(tmp_path_factory):
    """A 16 px DoF 2 set, its 10 deg table (1,296 frames) and predictions: every true test frame, then blurred,
    shifted and grey ones, (N, H*W*3) float32 rows in the table's HWC order."""
    root = tmp_path_factory.mktemp("nearest")
    path = render_dataset(RenderConfig(dof=2, size=16, frames=8, train_sequences=1, test_sequences=6),
                          root / "d2.h5", workers=2, progress=False)
    table = pose.pose_table(pose.tables.dataset_config(path), root / "cache", step_deg=10.0, progress=False)
    test = h5format.read_split(path, "test")
    truth = test.frames.reshape(-1, 16, 16, 3).astype(np.float32) / 255.0  # (48, H, W, 3)
    blurred = np.stack([cv2.GaussianBlur(im, (0, 0), s) for im in truth[::3] for s in (0.7, 1.5)])
    shifted = np.concatenate([np.roll(truth[::4], n, axis=2) for n in (1, 3)])
    grey = np.repeat(truth[::4].mean(axis=3, keepdims=True), 3, axis=3)
    flat = np.full((2, 16, 16, 3), 0.5, np.float32)
    return table, truth.reshape(len(truth), -1), np.concatenate([blurred, shifted, grey, flat]).reshape(-1, 768), root


# Every path of the search: the defaults; every query through the product with every row (DENSE 0) and the fine
# bound (REFINE 0), none screened; every query through the blocks alone, with one probe block and no fine bound; and
# every query with a row in play after its coarse bound through the fine bound of every row (SCREEN 0), then none or
# all of them through the float32 screen of every row (CROWD 2 or 0).
PATHS = [{}, {"DENSE": 0.0, "REFINE": 0, "SCREEN": 2.0}, {"DENSE": 2.0, "REFINE": 10**9, "PROBE": 1, "SCREEN": 2.0},
         {"SCREEN": 0.0, "CROWD": 2.0}, {"SCREEN": 0.0, "CROWD": 0.0}, {"SCREEN": 0.0, "CROWD": 0.0, "DENSE": 0.0}]


@pytest.mark.parametrize("knobs", PATHS, ids=["defaults", "dense-and-fine", "blocks-only", "fine-all", "screen",
                                              "screen-dense"])
def test_search_equals_brute_force_on_true_and_hedged_frames(dof2, monkeypatch, knobs):
    table, truth, hedged, _ = dof2
    for name, value in knobs.items():
        monkeypatch.setattr(nearest, name, value)
    index = nearest.Index.on(table.rows(), table.search, torch.device("cpu"))
    for queries in (truth, hedged):
        found, distance, scored = nearest.search(index, torch.from_numpy(queries))
        expected, expected_distance = brute_force(queries, table.rows())
        np.testing.assert_array_equal(found.numpy(), expected)
        np.testing.assert_allclose(distance.numpy(), expected_distance, rtol=0, atol=1e-12)
        # ... and the float32 product that scored the committed runs finds the same frames.
        np.testing.assert_array_equal(found.numpy(), float32_product(queries, table))
        assert 0 <= scored < len(queries) * len(table.frames) // 10  # the bounds rule out most rows
    # The true frames sit between grid poses: recover() (the benchmark's entry) agrees too.
    images = truth.reshape(-1, 16, 16, 3).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(pose.recover(images, table)[0], brute_force(truth, table.rows())[0])


def test_blocks_are_tiles_of_grid_neighbours_and_the_coarse_bound_folds_the_rest_into_the_residual():
    # A 6 x 6 grid in 4 x 4 tiles: the overhanging tiles repeat the last row / column.
    np.testing.assert_array_equal(nearest.tiles((6, 6), 4), [
        [0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, 18, 19, 20, 21],
        [4, 5, 5, 5, 10, 11, 11, 11, 16, 17, 17, 17, 22, 23, 23, 23],
        [24, 25, 26, 27, 30, 31, 32, 33, 30, 31, 32, 33, 30, 31, 32, 33],
        [28, 29, 29, 29, 34, 35, 35, 35, 34, 35, 35, 35, 34, 35, 35, 35]])
    np.testing.assert_array_equal(nearest.tiles((5,), 2), [[0, 1], [2, 3], [4, 4]])
    # The coarse z: the directions left out join the residual norm, [a_1, ||(a_2, r)||].
    np.testing.assert_array_equal(nearest.coarse(torch.tensor([[3.0, 5.0, 12.0]]), 1).numpy(), [[3.0, 13.0]])
    # The DoF 2 table's blocks: 4 x 4 poses, each row of the grid in exactly one block.
    blocks = pose.search_blocks(2, 10.0)
    assert blocks.shape == (81, 16) and sorted(blocks.ravel().tolist()) == list(range(1296))
    assert pose.grid(2, 10.0)[blocks[1]].min(axis=0).tolist() == [0.0, 40.0]
    assert pose.grid(2, 10.0)[blocks[1]].max(axis=0).tolist() == [30.0, 70.0]


# The 200-row table takes the small route (at most D rows); forced onto the blocks (SMALL 0), its queries through the
# pair step, or through the fine bound of every row and the screen.
TIE_PATHS = [{}, {"SMALL": 0.0, "SCREEN": 2.0}, {"SMALL": 0.0, "SCREEN": 0.0, "CROWD": 0.0}]


@pytest.mark.parametrize("knobs", TIE_PATHS, ids=["small", "pairs", "screen"])
def test_a_tie_goes_to_the_lowest_table_index(dof2, monkeypatch, knobs):
    table, truth, _, _ = dof2
    rows = table.rows()[:200].copy()
    rows[150] = rows[40]  # two identical table frames: the same cosine to every query
    rows[170] = rows[40]
    monkeypatch.setattr(nearest, "PROBE", 1)  # the bound cannot order the copies: the exact step must find 40
    for name, value in knobs.items():
        monkeypatch.setattr(nearest, name, value)
    index = nearest.Index.on(rows, nearest.build(rows), torch.device("cpu"))
    query = torch.from_numpy(rows[[40, 150, 170]].astype(np.float32) / 255.0)
    found, distance, _ = nearest.search(index, query)
    assert found.tolist() == [40, 40, 40]
    assert distance.max() < 1e-12


def test_the_screen_returns_the_pair_steps_rows_and_distances_bit_for_bit(dof2, monkeypatch):
    """A blurred, grey or flat frame leaves many rows after its coarse bound; screened against every row in float32
    (with its rounding bound), or bounded on all directions for every row at once, it must give the same rows and
    the same float64 distances as the fine bound of its pairs and the pair step."""
    table, truth, hedged, _ = dof2
    index = nearest.Index.on(table.rows(), table.search, torch.device("cpu"))
    queries = torch.from_numpy(np.concatenate([truth, hedged]))
    monkeypatch.setattr(nearest, "SCREEN", 2.0)  # never: every query through the fine bound and the pair step
    by_pairs = nearest.search(index, queries)
    monkeypatch.setattr(nearest, "SCREEN", 0.0)  # every query with a row in play through the screen
    monkeypatch.setattr(nearest, "CROWD", 0.0)
    by_screen = nearest.search(index, queries)
    np.testing.assert_array_equal(by_screen[0].numpy(), by_pairs[0].numpy())
    assert np.array_equal(by_screen[1].numpy(), by_pairs[1].numpy())  # bit for bit, not within a tolerance
    monkeypatch.setattr(nearest, "CROWD", 2.0)  # ... and through the fine bound of every row, none screened
    by_fine = nearest.search(index, queries)
    np.testing.assert_array_equal(by_fine[0].numpy(), by_pairs[0].numpy())
    assert np.array_equal(by_fine[1].numpy(), by_pairs[1].numpy())
    monkeypatch.setattr(nearest, "CROWD", 0.0)
    assert by_screen[2] < by_pairs[2]  # the screen leaves fewer rows for the exact step than the fine bound
    # A query with a negative pixel (outside what scoring sends: predictions are clamped to [0, 1]) is bounded by
    # |q| . u instead; it still gets brute force's row.
    signed = queries[:8].clone()
    signed[:, ::7] -= 0.3
    expected = brute_force(signed.numpy(), table.rows())[0]
    np.testing.assert_array_equal(nearest.search(index, signed)[0].numpy(), expected)


def test_the_screens_rounding_bound_holds_and_survives_matmul_precision_settings(dof2, monkeypatch):
    """The float32 partial sums are within screen_error of the float64 dot products on real frames, and a user's
    torch.set_float32_matmul_precision('medium') (bfloat16 products) is set aside while the screen runs."""
    table, truth, hedged, _ = dof2
    index = nearest.Index.on(table.rows(), table.search, torch.device("cpu"))
    q = torch.from_numpy(np.concatenate([truth, hedged])).double()
    exact = q.numpy() @ table.rows().astype(np.float64).T  # (B, N)
    screened = nearest.screen_dots(q.float(), index.screen_rows())
    error = nearest.screen_error(q.shape[1])
    assert 1e-5 < error < 2e-5  # (256 + 3 + 2) u at D = 768
    assert (np.abs(screened - exact) <= error * exact).all()
    was = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        monkeypatch.setattr(nearest, "SCREEN", 0.0)
        monkeypatch.setattr(nearest, "CROWD", 0.0)
        found = nearest.search(index, q.float())[0].numpy()
        assert torch.get_float32_matmul_precision() == "medium"  # restored
    finally:
        torch.set_float32_matmul_precision(was)
    np.testing.assert_array_equal(found, brute_force(q.numpy(), table.rows())[0])


def test_the_search_index_is_cached_beside_its_table(dof2, monkeypatch):
    table, _, _, root = dof2
    assert len(list((root / "cache" / "tables").glob("pose-search-dof2-*.npz"))) == 1
    monkeypatch.setattr(nearest, "build", lambda *a, **k: pytest.fail("a cached search index was built again"))
    again = pose.pose_table(table.config, root / "cache", step_deg=10.0, progress=False)
    assert all(np.array_equal(again.search[k], table.search[k]) for k in table.search)
    monkeypatch.undo()
    assert table.search is not None and table.search["coords"].shape == (1296, nearest.FINE_DIMS + 1)
    assert table.search["centres"].shape == (81, nearest.DIMS + 1)
    basis = table.search["basis"]
    np.testing.assert_allclose(basis @ basis.T, np.eye(nearest.FINE_DIMS), atol=1e-12)  # orthonormal: the bound holds
    # Every row lies within its block's radius of the centre (on the first DIMS directions): the block bound holds.
    near = nearest.coarse(torch.from_numpy(table.search["coords"]), nearest.DIMS).numpy()[table.search["groups"]]
    gap = np.linalg.norm(near - table.search["centres"][:, None], axis=2)  # (K, G)
    assert (gap <= table.search["radii"][:, None]).all()
    # The same table gives the same bytes (seeded basis).
    np.testing.assert_array_equal(nearest.build(table.rows())["coords"], table.search["coords"])


# The small-table route (a table of at most SMALL * D rows, e.g. the DoF 1 table), forced here on the 1,296-row table:
# as it comes, and with every query left after the triangle inequality through the fine bound (REFINE 0) (no screen
# on this route).
SMALL_PATHS = [{"SMALL": 10.0}, {"SMALL": 10.0, "REFINE": 0}]


@pytest.mark.parametrize("knobs", SMALL_PATHS, ids=["small", "small-fine"])
def test_the_small_table_route_equals_brute_force(dof2, monkeypatch, knobs):
    table, truth, hedged, _ = dof2
    blocks = nearest.Index.on(table.rows(), table.search, torch.device("cpu"))
    for name, value in knobs.items():
        monkeypatch.setattr(nearest, name, value)
    index = nearest.Index.on(table.rows(), table.search, torch.device("cpu"))
    assert index.small and not blocks.small
    frames = table.rows()[::7].astype(np.float32) / 255.0  # table frames: the first row is the answer, alone in reach
    for queries in (frames, truth, hedged):
        found, distance, scored = nearest.search(index, torch.from_numpy(queries))
        expected, expected_distance = brute_force(queries, table.rows())
        np.testing.assert_array_equal(found.numpy(), expected)
        np.testing.assert_allclose(distance.numpy(), expected_distance, rtol=0, atol=1e-12)
        # the same rows as the blocks' route, and the same float64 distances (one formula, exact_distance's)
        by_blocks = nearest.search(blocks, torch.from_numpy(queries))
        np.testing.assert_array_equal(found.numpy(), by_blocks[0].numpy())
        np.testing.assert_allclose(distance.numpy(), by_blocks[1].numpy(), rtol=0, atol=1e-15)
        if queries is frames:
            assert scored == 0  # the triangle inequality left no row but the first
            assert np.array_equal(distance.numpy(), by_blocks[1].numpy())  # bit for bit
        assert 0 <= scored < len(queries) * len(table.frames) // 10


def test_the_small_routes_row_distances_bound_every_pair(dof2, monkeypatch):
    """apart (N, N) holds ||u - v||^2 of the unit rows within 1e-11, gap the least over the other rows: a repeated
    frame has gap 0 (its copy is always in reach), distinct frames a positive gap."""
    table, _, _, _ = dof2
    rows = table.rows()[:300].copy()
    rows[250] = rows[20]
    index = nearest.Index.on(rows, nearest.build(rows), torch.device("cpu"))
    assert index.small
    unit = rows.astype(np.float64) / np.linalg.norm(rows.astype(np.float64), axis=1, keepdims=True)
    exact = ((unit[:, None] - unit[None]) ** 2).sum(axis=2)  # (N, N) by differences, no cancellation
    np.testing.assert_allclose(index.apart, exact, rtol=0, atol=1e-11)
    assert index.gap[20] == index.gap[250] == 0.0 and (np.delete(index.gap, [20, 250]) > 0).all()
    found, distance, _ = nearest.search(index, torch.from_numpy(rows[[250, 20]].astype(np.float32) / 255.0))
    assert found.tolist() == [20, 20] and distance.max() < 1e-12
