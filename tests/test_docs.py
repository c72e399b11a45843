"""The reading example in docs/dataset-format.md runs, with plain h5py, on a real v1 file."""

import re
from pathlib import Path

from tests.conftest import write_tiny_dataset

DOC = Path(__file__).resolve().parents[1] / "docs" / "dataset-format.md"


def test_plain_h5py_reading_example_runs(tmp_path, capsys):
    path = tmp_path / "d.h5"
    write_tiny_dataset(path, n_frames=16)
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert "import render" not in code and "from render" not in code
    exec(code.replace("data/dof2-teapot-32px-seed0.h5", str(path)), {})
    assert "teapot.f0" in capsys.readouterr().out
