"""ibdata.frames: the one uint8 <-> [0, 1] conversion, its layout and its inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ibdata.frames import to_float, to_uint8


def test_every_level_maps_to_its_fraction_and_back():
    levels = np.arange(256, dtype=np.uint8)
    x = to_float(levels)  # numpy in, torch out
    assert x.dtype == torch.float32 and x[0] == 0.0 and x[255] == 1.0 and x[51] == pytest.approx(0.2)
    assert torch.equal(x, torch.from_numpy(levels.astype(np.float32) / 255.0))  # the values readers had before
    assert torch.equal(to_uint8(x), torch.from_numpy(levels))


def test_layout_is_kept_and_only_uint8_is_converted():
    hwc = torch.arange(2 * 4 * 4 * 3, dtype=torch.uint8).reshape(2, 4, 4, 3)
    x = to_float(hwc.permute(0, 3, 1, 2))  # (2, 3, 4, 4) view of channels-last memory
    assert x.shape == (2, 3, 4, 4) and x.stride() == hwc.permute(0, 3, 1, 2).stride()
    floats = torch.rand(3)
    with pytest.raises(TypeError, match="uint8"):
        to_float(floats)  # would otherwise divide the caller's tensor in place
