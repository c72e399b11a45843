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


@pytest.mark.parametrize("candidates, float64_copy", [(nearest.CANDIDATES, nearest.FLOAT64_COPY), (1, 0)])
def test_search_equals_brute_force_on_true_and_hedged_frames(dof2, monkeypatch, candidates, float64_copy):
    table, truth, hedged, _ = dof2
    monkeypatch.setattr(nearest, "CANDIDATES", candidates)  # 1: nearly every query takes the fallback
    monkeypatch.setattr(nearest, "FLOAT64_COPY", float64_copy)  # 0: re-rank from the uint8 rows, as on DoF 2
    index = nearest.Index.on(table.rows(), table.search, torch.device("cpu"))
    for queries in (truth, hedged):
        found, distance, fallback = nearest.search(index, torch.from_numpy(queries))
        expected, expected_distance = brute_force(queries, table.rows())
        np.testing.assert_array_equal(found.numpy(), expected)
        np.testing.assert_allclose(distance.numpy(), expected_distance, rtol=0, atol=1e-12)
        # ... and the float32 product that scored the committed runs finds the same frames.
        np.testing.assert_array_equal(found.numpy(), float32_product(queries, table))
        if candidates == 1:
            assert fallback > 0
    # The true frames sit between grid poses: recover() (the benchmark's entry) agrees too.
    images = truth.reshape(-1, 16, 16, 3).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(pose.recover(images, table)[0], brute_force(truth, table.rows())[0])


def test_a_tie_goes_to_the_lowest_table_index(dof2, monkeypatch):
    table, truth, _, _ = dof2
    rows = table.rows()[:200].copy()
    rows[150] = rows[40]  # two identical table frames: the same cosine to every query
    rows[170] = rows[40]
    monkeypatch.setattr(nearest, "CANDIDATES", 1)  # the bound cannot order the copies: the fallback must find 40
    index = nearest.Index.on(rows, nearest.build(rows), torch.device("cpu"))
    query = torch.from_numpy(rows[[40, 150, 170]].astype(np.float32) / 255.0)
    found, distance, _ = nearest.search(index, query)
    assert found.tolist() == [40, 40, 40]
    assert distance.max() < 1e-12


def test_the_search_index_is_cached_beside_its_table(dof2, monkeypatch):
    table, _, _, root = dof2
    assert len(list((root / "cache" / "tables").glob("pose-search-dof2-*.npz"))) == 1
    monkeypatch.setattr(nearest, "build", lambda *a, **k: pytest.fail("a cached search index was built again"))
    again = pose.pose_table(table.config, root / "cache", step_deg=10.0, progress=False)
    assert all(np.array_equal(again.search[k], table.search[k]) for k in table.search)
    monkeypatch.undo()
    assert table.search is not None and table.search["coords"].shape == (1296, nearest.DIMS + 1)
    basis = table.search["basis"].astype(np.float64)
    np.testing.assert_allclose(basis @ basis.T, np.eye(nearest.DIMS), atol=1e-5)  # orthonormal: the bound holds
    # The same table gives the same bytes (seeded basis).
    np.testing.assert_array_equal(nearest.build(table.rows())["coords"], table.search["coords"])
