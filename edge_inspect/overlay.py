"""Drawing a judged part: the heat map blended over the image, the defect regions boxed, a caption strip.

One owner for the pictures ``predict`` writes, the live view shows and the defect archive stores.
Images here are RGB uint8; ``to_rgb`` turns a camera frame (BGR or mono, 8 or 16 bit) into one.
"""

from __future__ import annotations

import numpy as np

from .verdict import Region

HEAT_ALPHA = 0.45  # weight of the heat map in the overlay
MIN_FONT_SCALE = 0.25  # caption text on narrow images: smaller than this is unreadable anyway (then clipped)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A camera image ((H, W, 3) uint8 BGR, or (H, W) / (H, W, 1) mono uint8 or uint16) as (H, W, 3) uint8 RGB."""
    import cv2

    img = np.asarray(image)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def caption(record: dict) -> list[tuple[str, bool]]:
    """The caption's segments of one judged record (``label``, ``score``, ``threshold``, ``regions``, optional
    ``score_parts``): (text, is_verdict), verdict first."""
    label, score, thr = record["label"], record["score"], record["threshold"]
    segments = [(label.upper(), True), (f"score {_fmt(score)}", False),
                (f"{'>' if label == 'ng' else '<='} thr {_fmt(thr)}", False)]
    parts = record.get("score_parts")
    if parts is not None:
        segments += [(f"= map {_fmt(parts['map'])}", False), (f"+ global {_fmt(parts['global'])}", False)]
    if label == "ng":
        n = len(record["regions"])
        segments.append((f"{n} region{'' if n == 1 else 's'}", False))
    return segments


def heat_and_boxes(image: np.ndarray, heatmap: np.ndarray | None, regions: list[Region]) -> np.ndarray:
    """(H, W, 3) uint8 RGB: ``image`` (H, W, 3) uint8 RGB with ``heatmap`` ((h, w) in [0, 1], any size; None:
    none) resized onto it in JET and ``regions`` (image pixels) boxed in white. ``image`` is not modified."""
    import cv2

    h, w = image.shape[:2]
    canvas = np.ascontiguousarray(image, dtype=np.uint8).copy()
    if heatmap is not None:
        heat = np.clip(np.nan_to_num(np.asarray(heatmap, np.float32), nan=0.0), 0.0, 1.0)
        if heat.shape != (h, w):
            heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
        colour = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)  # BGR
        colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
        canvas = cv2.addWeighted(canvas, 1.0 - HEAT_ALPHA, colour, HEAT_ALPHA, 0.0)
    thick = max(1, round(min(h, w) / 250))
    for r in regions:
        x1, y1 = min(w - 1, r.x + r.w - 1), min(h - 1, r.y + r.h - 1)
        cv2.rectangle(canvas, (r.x, r.y), (x1, y1), (255, 255, 255), thick)
    return canvas


def render_overlay(image: np.ndarray, heatmap: np.ndarray | None, regions: list[Region],
                   segments: list[tuple[str, bool]], label: str = "ok") -> np.ndarray:
    """(H + strip, W, 3) uint8 RGB: ``image`` (H, W, 3) uint8 RGB with ``heatmap`` ((h, w) in [0, 1], any
    size; None: none) resized onto it in JET, ``regions`` boxed in white, and a caption strip below holding
    ``segments`` ((text, is_verdict), the verdict coloured by ``label``: red for NG, green for OK), wrapped
    to the image width."""
    import cv2

    h, w = image.shape[:2]
    canvas = heat_and_boxes(image, heatmap, regions)

    font = cv2.FONT_HERSHEY_SIMPLEX
    widest = max((cv2.getTextSize(t, font, 1.0, 3)[0][0] for t, _ in segments), default=1)
    scale = float(np.clip(min(w / 520.0, (w - 4) / widest), MIN_FONT_SCALE, 1.0))  # the widest segment fits
    weight = 1 if scale < 0.7 else 2
    pad = max(2, round(6 * scale))
    gap = cv2.getTextSize("  ", font, scale, weight)[0][0]
    (_, text_h), base = cv2.getTextSize("Ag", font, scale, weight)
    line_h = text_h + base + pad
    lines: list[list[tuple[str, bool, int]]] = [[]]
    used = pad
    for text, is_verdict in segments:  # greedy wrap; a segment wider than the image gets a line of its own
        tw = cv2.getTextSize(text, font, scale, weight + (1 if is_verdict else 0))[0][0]
        if lines[-1] and used + gap + tw > w - pad:
            lines.append([])
            used = pad
        if lines[-1]:
            used += gap
        lines[-1].append((text, is_verdict, used))
        used += tw
    strip = np.full((len(lines) * line_h + pad, w, 3), 32, np.uint8)
    verdict_colour = (235, 60, 60) if label == "ng" else (70, 210, 90)
    for i, line in enumerate(lines):
        y = pad + i * line_h + text_h
        for text, is_verdict, x in line:
            cv2.putText(strip, text, (x, y), font, scale, verdict_colour if is_verdict else (235, 235, 235),
                        weight + (1 if is_verdict else 0), cv2.LINE_AA)
    return np.concatenate([canvas, strip], axis=0)
