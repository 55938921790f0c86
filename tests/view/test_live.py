"""The view's drawing and state without a server: frames scaled before drawing, boxes scaled alike, every
part in the trend, NG thumbnails kept for the last few NG parts."""

from __future__ import annotations

import cv2
import numpy as np

from edge_inspect.view.live import ViewObserver
from edge_inspect.view.settings import ViewSettings
from tests.archive.parts import part


def test_big_frame_is_scaled_first_and_boxes_follow(tiny_model_dir):
    view = ViewObserver(ViewSettings(width=100, ng_thumbnails=2, trend_parts=10))
    big = part(tiny_model_dir, 1, "ng", size=400)  # region x=y=100, w=h=200 in a 400x400 frame
    rgb = view._picture(big, 100)
    assert rgb.shape == (100, 100, 3)
    white = np.argwhere((rgb == 255).all(axis=2))  # the box is white; the grey frame and JET heat are not
    assert white.size and white.min(axis=0).tolist() == [25, 25] and white.max(axis=0).tolist() == [74, 74]
    jpeg = view._render_frame(big)
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (100, 100, 3)


def test_trend_has_every_part_and_thumbs_the_last_ng(tiny_model_dir):
    view = ViewObserver(ViewSettings(ng_thumbnails=2, trend_parts=10))
    for seq in range(15):
        view.offer(part(tiny_model_dir, seq, "ng" if seq % 3 == 0 else "ok", float(seq)))
    view.handle(view._take(0.1))  # the newest part only: the slot kept one
    version, state = view.live.snapshot()
    (tile,) = state["cameras"]  # one camera: one tile
    assert [t["seq"] for t in tile["trend"]] == list(range(5, 15))  # every part, not only the drawn ones
    assert [t["seq"] for t in state["ng"]] == [9, 12]
    assert tile["part"]["seq"] == 14 and tile["frame"] == 1 and version == 1
    assert all(view.live.thumb(t["key"]) is not None for t in state["ng"])
    assert view.stats()["skipped"] == 14
