from __future__ import annotations

import numpy as np
import pytest

from edge_inspect.errors import ImageError
from edge_inspect.manifest import InputSpec
from edge_inspect.preprocess import preprocess, to_rgb8


def test_shapes_and_normalisation():
    spec = InputSpec(height=32, width=48)
    x = preprocess(np.full((100, 70, 3), 255, np.uint8), spec)
    assert x.shape == (1, 3, 32, 48) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], (1 - np.array(spec.mean)) / np.array(spec.std), rtol=1e-5)


def test_mono_16bit_and_channel_order():
    mono16 = np.full((10, 10), 65535, np.uint16)
    assert to_rgb8(mono16).shape == (10, 10, 3) and to_rgb8(mono16).max() == 255
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV order
    assert to_rgb8(bgr, "BGR")[0, 0].tolist() == [0, 0, 200]
    assert to_rgb8(bgr, "RGB")[0, 0].tolist() == [200, 0, 0]


@pytest.mark.parametrize("bad", [np.zeros((0, 3), np.uint8), np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4), np.int32),
                                 np.full((4, 4), np.nan, np.float32)])
def test_bad_images_raise(bad):
    with pytest.raises(ImageError):
        preprocess(bad, InputSpec())


def test_score_input_independent_of_original_size():
    spec = InputSpec(height=16, width=16)
    small = np.full((50, 50, 3), 90, np.uint8)
    wide = np.full((50, 200, 3), 90, np.uint8)
    np.testing.assert_allclose(preprocess(small, spec), preprocess(wide, spec))
