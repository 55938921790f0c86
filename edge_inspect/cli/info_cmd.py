"""``edge-inspect info --model DIR``: what a model folder holds (graphs, input spec, thresholds, engines)."""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="show a model folder's manifest summary",
                              description="Print the manifest of an exported model folder; graph files are "
                              "checked against their sha256 unless --no-verify.")
    p.add_argument("--model", metavar="MODEL_DIR", required=True, help="exported model folder")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.add_argument("--no-verify", action="store_true", help="do not hash the graph files")
    p.set_defaults(func=info)


def info(args) -> int:
    from ..manifest import load_manifest

    manifest = load_manifest(args.model, verify_files=not args.no_verify)
    if args.json:
        print(json.dumps(manifest.model_dump(mode="json"), indent=2))
    else:
        print(format_manifest(manifest, args.model))
    return 0


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def format_manifest(m, model_dir) -> str:
    spec, cal, prov = m.input, m.calibration, m.provenance
    lines = [
        f"model {m.model_id} v{m.model_version}  profile {m.profile}  schema {m.schema_version}  ({model_dir})",
        f"input '{spec.name}': {spec.layout} {spec.dtype} 1x3x{spec.height}x{spec.width}, {spec.channel_order}, "
        f"resize {spec.resize}, scale {spec.scale:.6g}, mean {spec.mean}, std {spec.std}",
        "placement: " + (f"{spec.height}x{spec.width} tiles at the image's resolution, overlap {spec.tiles.overlap:g}"
                         if spec.tiles is not None else spec.fit
                         + (f", padded with {spec.pad_value}" if spec.fit == "letterbox" else "")),
        f"outputs: score '{m.score_output}', map '{m.map_output}'"
        + (f", extra {m.extra_outputs}" if m.extra_outputs else ""),
        f"graphs ({len(m.graphs)}, run in this order):",
    ]
    for g in m.graphs:
        ins = ", ".join(f"{t.name}{_shape(t.shape)}" for t in g.inputs)
        outs = ", ".join(f"{t.name}{_shape(t.shape)}" for t in g.outputs)
        extra = []
        if g.params is not None:
            extra.append(f"{g.params / 1e6:.2f} M params")
        if g.gmacs is not None:
            extra.append(f"{g.gmacs:.2f} GMAC")
        if g.precision != "fp32":
            extra.append(g.precision)
        lines.append(f"  {g.name:<14} {g.file:<22} {ins} -> {outs}" + (f"  [{', '.join(extra)}]" if extra else ""))
    q = m.quantization
    if q is not None:
        lines.append(f"quantized: {q.method}; weights {q.weights}; activations {q.activations}; ranges from "
                     f"{q.calibration_count} images ({q.calibration_method}) of {q.calibration_source}")
        lines.append(f"  kept float: {'; '.join(q.kept_float) or 'nothing'}")
        lines.append(f"  thresholds: {q.thresholds}")
    gs = cal.good_scores
    lines += [
        f"image threshold {cal.image_threshold:.6g} ({cal.image_threshold_method})"
        + (f"; F1-optimal {cal.image_threshold_f1:.6g}" if cal.image_threshold_f1 is not None else ""),
        f"pixel threshold {cal.pixel_threshold:.6g}; normalisation range [{cal.norm_min:.6g}, {cal.norm_max:.6g}]",
        f"good scores: n={gs.count} mean {gs.mean:.4g} std {gs.std:.4g} min {gs.min:.4g} max {gs.max:.4g}",
    ]
    if cal.defect_scores is not None:
        ds = cal.defect_scores
        lines.append(f"defect scores: n={ds.count} mean {ds.mean:.4g} std {ds.std:.4g} "
                     f"min {ds.min:.4g} max {ds.max:.4g}")
    from ..evaluation.recalibrate import HISTORY_DIR, describe

    lines += ["calibration:", *("  " + line for line in describe(cal).splitlines())]
    kept = sorted((Path(model_dir) / HISTORY_DIR).glob("manifest-*.json"))
    if kept:
        lines.append(f"  {len(kept)} earlier calibration(s) kept in {Path(model_dir) / HISTORY_DIR}")
    if m.engines:
        lines.append(f"engines ({len(m.engines)}):")
        for e in m.engines:
            dla = f" DLA{e.dla_core}" if e.dla_core is not None else ""
            err = f", max abs error {e.max_abs_error:.3g}" if e.max_abs_error is not None else ""
            lines.append(f"  {e.graph:<14} {e.file:<26} {e.precision}{dla} TensorRT {e.tensorrt_version} on "
                         f"{e.gpu_name} (sm {e.compute_capability}), built {e.built_at}{err}")
    else:
        lines.append("engines: none (build them on the device with 'edge-inspect build')")
    lines.append(f"provenance: code {prov.code_version}, created {prov.created_at}"
                 + (f", torch {prov.torch_version}" if prov.torch_version else "")
                 + (f", opset {prov.onnx_opset}" if prov.onnx_opset else "")
                 + (f", data {prov.data_fingerprint[:16]}" if prov.data_fingerprint else ""))
    return "\n".join(lines)
