"""The floors hold: ibutil -> ibdata -> render / inbetween -> benchmarks, and reading a dataset imports no GL code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import write_tiny_dataset

ROOT = Path(__file__).resolve().parent.parent


def test_no_import_runs_back_up_a_floor():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py"), str(ROOT)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    graph = {a.strip(): b.strip() for a, b in (line.split(" -> ") for line in r.stdout.splitlines())}
    assert graph["ibutil"] == "(none)" and graph["ibdata"] == "ibutil"
    assert "render" not in graph["inbetween"] and "inbetween" not in graph["render"]
    assert graph["benchmarks.scoring"] == "(none)"  # scoring imports nothing of the engine, results or tools
    assert graph["benchmarks.results"] == "benchmarks.scoring"  # the results read records; the engine calls them


def test_reading_a_dataset_and_the_training_entry_import_no_gl(tmp_path):
    path = tmp_path / "tiny.h5"
    write_tiny_dataset(path)
    code = f"""
import sys
import ibdata, ibdata.frames, ibdata.h5format, ibdata.tasks, ibdata.triplets
import inbetween.cli, inbetween.train
ds = ibdata.triplets.TripletDataset({str(path)!r}, "test", gaps=1)
assert ds.batch([0])["x1"].dtype.is_floating_point
gl = sorted(m for m in sys.modules if m.split(".")[0] in ("render", "pyrender", "OpenGL"))
print(" ".join(gl) or "clean")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "clean"
