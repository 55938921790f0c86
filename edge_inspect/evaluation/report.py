"""The evaluation report: report.html with its PNGs (ROC curves, false-reject vs escape curve, score
histograms, heat-map overlays of the worst parts). The HTML embeds the PNGs so it can be mailed alone.
Needs matplotlib (the [eval] extra); it is imported when a figure is drawn.

Reads the metrics dict that runner.evaluate writes to metrics.json and the scored images; computes nothing
that metrics.json does not already hold, apart from what a figure needs (per-type ROC curves, map ranges).
"""

from __future__ import annotations

import base64
import html
import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import DataError, require
from . import metrics as M
from .scoring import Scored

log = logging.getLogger(__name__)

WORST_K = 6  # heat-map overlays per group in the report


@contextmanager
def writing(path: Path):
    """Turn an OSError (disk full, read-only, no permission) while writing ``path`` into DataError."""
    try:
        yield
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from exc


def _figure(**kw):
    """A matplotlib Figure on the Agg canvas, without pyplot's global state."""
    require("matplotlib", "eval", "the evaluation report")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _plot_image_roc(path: Path, result: dict, scored: list[Scored], curves: dict) -> None:
    fig = _figure(figsize=(5.5, 5), dpi=110)
    ax = fig.add_subplot()
    fpr, tpr, _ = curves["image_roc"]
    ax.plot(fpr, tpr, color="black", lw=2, label=f"all defects (AUROC {result['image_auroc']:.3f})")
    labels = np.array([s.label for s in scored])
    scores = np.array([s.score for s in scored])
    types = np.array([s.defect_type for s in scored], dtype=object)
    per = result["per_defect_type"]
    if 1 < len(per) <= 10:
        for name, info in per.items():
            sel = (labels == 0) | (types == name)
            f, t, _ = M.image_roc(labels[sel], scores[sel])
            ax.plot(f, t, lw=1, alpha=0.8, label=f"{name} (AUROC {info['auroc']:.3f})")
    if result["false_reject_rate"] is not None and result["escape_rate"] is not None:
        ax.plot([result["false_reject_rate"]], [1 - result["escape_rate"]], "o", color="red", ms=8,
                label=f"threshold in force ({result['threshold']:.3g})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="chance")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false-positive rate (good parts rejected)",
           ylabel="true-positive rate (defective parts caught)", title="Image-level ROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with writing(path):
        fig.savefig(path)


def _plot_pixel_curves(path: Path, result: dict, pc: M.PixelCurves) -> None:
    fig = _figure(figsize=(10, 4.6), dpi=110)
    ax1, ax2 = fig.subplots(1, 2)
    step = max(1, pc.fpr.size // 2000)  # thin the curve for plotting only
    ax1.plot(pc.fpr[::step], pc.tpr[::step], color="black", lw=2,
             label=f"pixel AUROC {result['pixel_auroc']:.3f}")
    ax1.plot([0, 1], [0, 1], ls=":", color="grey", label="chance")
    ax1.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false-positive rate (good pixels)",
            ylabel="true-positive rate (defect pixels)", title="Pixel-level ROC")
    ax1.legend(loc="lower right", fontsize=8)
    ax1.grid(alpha=0.3)

    def upto(x_max: float) -> tuple[np.ndarray, np.ndarray]:
        # the curve up to x_max, ending on the interpolated point at x_max (as the AUPRO integral does)
        keep = pc.fpr <= x_max
        return np.append(pc.fpr[keep], x_max), np.append(pc.pro[keep], np.interp(x_max, pc.fpr, pc.pro))

    ax2.plot(*upto(M.MAX_FPR * 1.2), color="tab:blue", lw=2,
             label=f"AUPRO≤{M.MAX_FPR:.0%} {result['aupro_30']:.3f}")
    ax2.fill_between(*upto(M.MAX_FPR), color="tab:blue", alpha=0.15)
    ax2.axvline(M.MAX_FPR, ls="--", color="grey", lw=1, label=f"FPR limit {M.MAX_FPR:.0%}")
    ax2.set(xlim=(0, M.MAX_FPR * 1.2), ylim=(-0.01, 1.01), xlabel="false-positive rate (good pixels)",
            ylabel="per-region overlap", title=f"PRO curve ({pc.regions} defect regions)")
    ax2.legend(loc="lower right", fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    with writing(path):
        fig.savefig(path)


def _plot_operating_point(path: Path, op: dict) -> None:
    """False-reject rate (x, symmetric-log so 0 shows) vs escape rate (y) over all thresholds, with the
    threshold in force, the suggested thresholds and the zero-escape point marked."""
    curve = op["curve"]
    fig = _figure(figsize=(7.5, 5), dpi=110)
    ax = fig.add_subplot()
    ax.plot(curve["false_reject_rate"], curve["escape_rate"], "-o", color="black", lw=1.2, ms=2.5,
            label="every score as threshold")
    for p, marker in zip(op["suggested_thresholds"]["points"], "sD^v", strict=False):
        if p["threshold"] is not None:
            ax.plot([p["false_reject_rate"]], [p["escape_rate"]], marker, ms=7, mfc="none", mew=1.5,
                    label=f"suggested for FRR ≤ {p['target_false_reject_rate']:.1%}: {p['threshold']:.4g} "
                          f"(escapes {p['escape_rate']:.1%})")
    z = op["false_reject_rate_at_zero_escapes"]
    if z["threshold"] is not None:
        ax.plot([z["false_reject_rate"]], [z["escape_rate"]], "P", color="tab:green", ms=8,
                label=f"0 escapes: {z['threshold']:.4g} (FRR {z['false_reject_rate']:.1%})")
    f = curve["in_force"]
    ax.plot([f["false_reject_rate"]], [f["escape_rate"]], "o", color="red", ms=9,
            label=f"threshold in force {f['threshold']:.4g} ({op['threshold_source']})")
    # symlog: the many points at 0 false rejects stay on the plot; below 1/n goods nothing is measurable
    ax.set_xscale("symlog", linthresh=1e-3, linscale=0.5)
    ax.set(xlim=(-2e-4, 1.05), ylim=(-0.02, 1.02), xlabel="false-reject rate (good parts judged NG; symlog)",
           ylabel="escape rate (defective parts judged OK)",
           title="Operating point: false rejects vs escapes (measured on the test set)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    with writing(path):
        fig.savefig(path)


def _plot_histogram(path: Path, result: dict, scored: list[Scored]) -> None:
    fig = _figure(figsize=(7.5, 4.2), dpi=110)
    ax = fig.add_subplot()
    scores = np.array([s.score for s in scored])
    good = np.array([s.label == 0 for s in scored])
    edges = np.histogram_bin_edges(np.append(scores, result["threshold"]), bins=40)
    if good.any():
        ax.hist(scores[good], bins=edges, color="tab:green", alpha=0.6, label=f"good ({int(good.sum())})")
    if (~good).any():
        ax.hist(scores[~good], bins=edges, color="tab:red", alpha=0.6,
                label=f"defective ({int((~good).sum())})")
    ax.axvline(result["threshold"], color="black", lw=2,
               label=f"threshold in force {result['threshold']:.3g} ({result['threshold_source']})")
    if result.get("f1_threshold") is not None:
        ax.axvline(result["f1_threshold"], color="tab:purple", ls="--", lw=1.5,
                   label=f"F1-optimal on this set {result['f1_threshold']:.3g}")
    ax.set(xlabel="image score (higher = more anomalous; NG when above the threshold)", ylabel="images",
           title="Image scores: good vs defective")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with writing(path):
        fig.savefig(path)


def _plot_overlays(path: Path, title: str, rows: list[Scored], threshold: float, pixel_threshold: float,
                   vmin: float, vmax: float) -> None:
    """One row per image: image | image + GT contour | heat map overlay (+ GT and pixel-threshold
    contours)."""
    import cv2

    from ..data.mvtec import load_image, load_mask

    height = 3.3 * len(rows) + 0.5  # inches
    fig = _figure(figsize=(10.5, height), dpi=90)
    axes = fig.subplots(len(rows), 3, squeeze=False)
    heat = None
    for ax_row, s in zip(axes, rows, strict=True):
        image = load_image(s.path)
        h, w = image.shape[:2]
        amap = cv2.resize(s.amap, (w, h), interpolation=cv2.INTER_LINEAR)
        mask = load_mask(s.mask_path, shape=image.shape) if s.mask_path else None
        for ax in ax_row:
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_title(f"{s.rel_path} (truth: {s.defect_type})\n"
                            f"score {s.score:.3g} → {_verdict(s, threshold)}"
                            f"{_parts_text(s.score_parts)}", fontsize=8)
        has_defect = mask is not None and mask.any()
        ax_row[1].set_title("ground truth" if has_defect else "ground truth: no defect", fontsize=8)
        heat = ax_row[2].imshow(amap, cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax)
        ax_row[2].set_title("anomaly map (dashed: > pixel threshold)", fontsize=8)
        if mask is not None and mask.any():
            for ax in ax_row[1:]:
                ax.contour(mask.astype(np.uint8), levels=[0.5], colors="lime", linewidths=1.2)
        if (amap > pixel_threshold).any() and (amap <= pixel_threshold).any():
            ax_row[2].contour(amap, levels=[pixel_threshold], colors="white", linewidths=1,
                              linestyles="dashed")
    fig.suptitle(title, fontsize=11)
    # 0.4 in on top for the suptitle, clear of the row titles
    fig.tight_layout(rect=(0, 0, 0.93, 1 - 0.4 / height))
    if heat is not None:  # an opaque colour bar, not the half-transparent overlay's
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        cax = fig.add_axes((0.94, 0.2, 0.015, 0.6))
        fig.colorbar(ScalarMappable(Normalize(vmin, vmax), "jet"), cax=cax, label="anomaly map value")
    with writing(path):
        fig.savefig(path)


def _verdict(s: Scored, threshold: float) -> str:
    """What the line did with the part at ``threshold``, in the plant's words (caught / ESCAPED / ...)."""
    ng = M.label_at(s.score, threshold) == "ng"
    if s.label == 1:
        return "caught (NG)" if ng else "ESCAPED (OK)"
    return "FALSE REJECT (NG)" if ng else "ok (OK)"


def _parts_text(parts: dict | None) -> str:
    """', map a + global b' for a fused score, so a rejection says which part drove it; '' otherwise."""
    return "" if parts is None else f" = map {parts['map']:.3g} + global {parts['global']:.3g}"


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.1%}" if pct else f"{v:.4g}"
    return html.escape(str(v))


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><a href="{html.escape(path.name)}"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(alt)}"></a><figcaption>{html.escape(alt)} ({html.escape(path.name)})'
            '</figcaption></figure>')


def worst_parts(scored: list[Scored], k: int = WORST_K) -> tuple[list[Scored], list[Scored]]:
    """(worst misses, worst false alarms): the ``k`` lowest-scored defective parts, caught or not (the
    ones closest to escaping, or escaped), and the ``k`` highest-scored good parts. Ties by path."""
    bad = sorted((s for s in scored if s.label == 1), key=lambda s: (s.score, s.rel_path))
    good = sorted((s for s in scored if s.label == 0), key=lambda s: (-s.score, s.rel_path))
    return bad[:k], good[:k]


def _pct_interval(iv) -> str:
    return "–" if iv is None else f"{iv[0]:.2%} – {iv[1]:.2%}"


def _operating_point_html(op: dict) -> str:
    """The report's operating-point section: confusion counts, headline points, suggestions, calibration."""
    c = op["confusion"]
    confusion = (f"<table><tr><th>threshold in force {_fmt(c['threshold'])}</th><th>judged OK</th>"
                 "<th>judged NG</th></tr>"
                 f"<tr><th>good</th><td>{c['true_ok']} true OK</td>"
                 f"<td>{c['false_reject']} false rejects</td></tr>"
                 f"<tr><th>defective</th><td>{c['escape']} escapes</td>"
                 f"<td>{c['caught']} caught</td></tr></table>")

    def point(p: dict) -> str:
        if p["threshold"] is None:
            return f"– ({html.escape(p['reason'])})"
        return (f"threshold {_fmt(p['threshold'])}: false-reject rate {_fmt(p['false_reject_rate'], True)}, "
                f"escape rate {_fmt(p['escape_rate'], True)}")

    heads = [("escape rate at 1 % false rejects", point(op["escape_rate_at_1pct_false_rejects"])),
             ("false-reject rate at 0 escapes (highest threshold catching every defect)",
              point(op["false_reject_rate_at_zero_escapes"]))]
    heads_html = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in heads)
    sug = op["suggested_thresholds"]
    sug_rows = "".join(
        f"<tr><td>≤ {p['target_false_reject_rate']:.1%}</td><td>{_fmt(p['threshold'])}</td>"
        f"<td>{_fmt(p['false_reject_rate'], True)}</td><td>{_fmt(p['escape_rate'], True)}</td></tr>"
        for p in sug["points"])
    cal = op["calibration"]
    if cal is None:
        skipped = html.escape(op["calibration_skipped"] or "")
        cal_html = f"<p class=note>Calibration check skipped: {skipped}</p>"
    else:
        verdict = {True: "agrees", False: "DISAGREES", None: "cannot tell"}[cal["consistent"]]
        cal_html = (
            f"<table><tr><th>calibration (threshold {_fmt(cal['threshold'])}, "
            f"{html.escape(cal['calibration_source'])}, n = {cal['calibration_n']})</th>"
            f"<th>false-reject rate</th><th>{cal['confidence']:.0%} interval</th></tr>"
            "<tr><td>expected by the calibration</td>"
            f"<td>{_fmt(cal['expected_false_reject_rate'], True)}</td>"
            f"<td>{_pct_interval(cal['expected_false_reject_interval'])}</td></tr>"
            f"<tr><td>measured on the test goods ({cal['measured_false_rejects']} of {cal['good']})</td>"
            f"<td>{_fmt(cal['measured_false_reject_rate'], True)}</td>"
            f"<td>{_pct_interval(cal['measured_false_reject_interval'])}</td></tr></table>"
            f"<p>The test goods {verdict} with the calibration "
            f"(the intervals {'overlap' if cal['consistent'] else 'do not overlap'}).</p>")
    return (f"<h2>Operating point</h2>{confusion}<table>{heads_html}</table>"
            f"<h3>Suggested thresholds (measured on {html.escape(sug['measured_on'])})</h3>"
            f"<p class=note>{html.escape(sug['note'])}.</p>"
            f"<table><tr><th>target false-reject rate</th><th>threshold</th><th>false-reject rate</th>"
            f"<th>escape rate</th></tr>{sug_rows}</table>"
            f"<h3>Calibration vs test goods</h3>{cal_html}")


def _worst_html(title: str, rows: list[Scored], threshold: float) -> str:
    """A table of the parts shown in an overlay figure: path, truth, score (and parts), verdict."""
    if not rows:
        return ""
    body = "".join(
        f"<tr><td><code>{html.escape(s.rel_path)}</code></td><td>{html.escape(s.defect_type)}</td>"
        f"<td>{_fmt(s.score)}{html.escape(_parts_text(s.score_parts))}</td>"
        f"<td>{html.escape(_verdict(s, threshold))}</td></tr>"
        for s in rows)
    return (f"<h3>{html.escape(title)}</h3><table><tr><th>image</th><th>truth</th><th>score</th>"
            f"<th>at threshold {_fmt(threshold)}</th></tr>{body}</table>")


def write_report(out_dir: Path, result: dict, scored: list[Scored], curves: dict) -> Path:
    """Write report.html and its PNGs into ``out_dir``; return the HTML path."""
    figures: list[tuple[Path, str]] = []
    if "image_roc" in curves:
        p = out_dir / "roc_image.png"
        _plot_image_roc(p, result, scored, curves)
        figures.append((p, "Image-level ROC"))
    if "pixel" in curves:
        p = out_dir / "roc_pixel.png"
        _plot_pixel_curves(p, result, curves["pixel"])
        figures.append((p, "Pixel-level ROC and PRO curve"))
    op = result["operating_point"]
    if op["curve"]["false_reject_rate"] is not None and op["curve"]["escape_rate"] is not None:
        p = out_dir / "frr_escape.png"
        _plot_operating_point(p, op)
        figures.append((p, "False rejects vs escapes"))
    p = out_dir / "score_histogram.png"
    _plot_histogram(p, result, scored)
    figures.append((p, "Score histogram"))

    good = [s for s in scored if s.label == 0]
    good_med = float(np.median([np.median(s.amap) for s in good])) if good else float(
        min(s.amap.min() for s in scored))
    worst_misses, false_alarms = worst_parts(scored)
    shown = worst_misses + false_alarms
    if shown:
        vmax = max(float(np.percentile(s.amap, 99.9)) for s in shown)
        vmax = max(vmax, result["pixel_threshold"], good_med + 1e-6)
        for name, rows, title in (("worst_misses.png", worst_misses,
                                   "Defective parts scored lowest (worst misses): caught or ESCAPED"),
                                  ("worst_false_alarms.png", false_alarms,
                                   "Good parts scored highest (worst false alarms)")):
            if rows:
                p = out_dir / name
                _plot_overlays(p, title, rows, result["threshold"], result["pixel_threshold"], good_med, vmax)
                figures.append((p, title))

    r = result
    table = [
        ("image AUROC", _fmt(r["image_auroc"])), ("pixel AUROC", _fmt(r["pixel_auroc"])),
        (f"AUPRO (FPR ≤ {M.MAX_FPR:.0%})", _fmt(r["aupro_30"])),
        ("F1-max (threshold)", f"{_fmt(r['f1_max'])} ({_fmt(r['f1_threshold'])})"),
        ("threshold in force", f"{_fmt(r['threshold'])} ({html.escape(r['threshold_source'])}: "
                               f"{html.escape(r['threshold_method'])})"),
        ("false-reject rate (good)",
         f"{_fmt(r['false_reject_rate'], True)} ({r['false_rejects']} of {r['counts']['good']})"),
        ("escape rate (defective)",
         f"{_fmt(r['escape_rate'], True)} ({r['escapes']} of {r['counts']['defective']})"),
        ("latency per image, median / p99",
         f"{_fmt(r['latency_ms']['median'])} / {_fmt(r['latency_ms']['p99'])} ms"),
        ("images scored / skipped", f"{r['counts']['scored']} / {r['counts']['skipped']}"),
    ]
    rows_html = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in table)
    per_html = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{i['count']}</td><td>{_fmt(i['auroc'])}</td>"
        f"<td>{_fmt(i['escape_rate'], True)}</td><td>{_fmt(i['mean_score'])}</td></tr>"
        for t, i in r["per_defect_type"].items()
    )
    data_warnings = (r.get("data_check") or {}).get("warnings") or []
    notes = [*(f"Data check: {w}" for w in data_warnings),
             f"Pixel metrics skipped: {r['pixel_metrics_skipped']}" if r.get("pixel_metrics_skipped") else "",
             f"Image metrics skipped: {r['image_metrics_skipped']}" if r.get("image_metrics_skipped") else "",
             r.get("pixel_metrics_note") or ""]
    notes_html = "".join(f"<p class=note>{html.escape(n)}</p>" for n in notes if n)
    skipped_html = "".join(f"<li><code>{html.escape(s['path'])}</code>: {html.escape(s['reason'])}</li>"
                           for s in r["skipped"])
    rule = html.escape(r["decision_rule"])
    per_head = "".join(f"<th>{h}</th>"
                       for h in ("type", "images", "AUROC vs good", "escape rate", "mean score"))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>edge-inspect evaluation: {html.escape(r['category'])} / {html.escape(r['model_id'])}</title>
<style>
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}} th,td{{border:1px solid #ccc;padding:4px 10px;text-align:left}}
figure{{margin:1.5em 0}} img{{max-width:100%;border:1px solid #ddd}} .note{{color:#a15c00}}
</style></head><body>
<h1>Evaluation: {html.escape(r['category'])}</h1>
<p>Model <b>{html.escape(r['model_id'])}</b> v{html.escape(str(r['model_version']))}, backend
<b>{html.escape(str(r['backend']))}</b>, {html.escape(r['created_at'])}. Decision rule: {rule}.</p>
{notes_html}
<h2>Metrics</h2><table>{rows_html}</table>
{_operating_point_html(op)}
<h2>Per defect type</h2>
<table><tr>{per_head}</tr>{per_html}</table>
{_worst_html("Worst misses: defective parts scored lowest", worst_misses, r["threshold"])}
{_worst_html("Worst false alarms: good parts scored highest", false_alarms, r["threshold"])}
<h2>Figures</h2>
{''.join(_img_tag(p, alt) for p, alt in figures)}
{f'<h2>Skipped files</h2><ul>{skipped_html}</ul>' if skipped_html else ''}
</body></html>
"""
    path = out_dir / "report.html"
    with writing(path):
        path.write_text(page, encoding="utf-8")
    log.info("eval: report %s", path)
    return path
