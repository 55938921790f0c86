"""Refit the map head's good-image statistics on a model folder's own graphs (``edge-inspect quantize``).

The exported map head (the graph that computes ``score``) carries statistics the trainer fitted on good
images through the *float* networks (trainer.train):

* ``m.map_mean`` / ``m.map_std`` (1, M, 1, 1): the discriminator's input scaling, on the training goods;
* ``m.glob_mean`` (1, D) and its whitening: the image-level Gaussian of pooled teacher features, training goods;
* ``m.reg_mean`` (1, Dr) and its whitening: the regional Gaussian of window statistics (every other window
  in each direction), training goods;
* ``m.map_stats`` (4,), ``m.score_stats`` (4,): the scales that fuse the maps and the scores, held-out goods.

Quantized networks move their features a little, and the Gaussians' whitening magnifies such moves along
the directions in which good parts barely vary: with INT8 teachers on magnetic_tile the Gaussians' means moved by up to
0.27 and pixel AUROC fell by 0.024 (docs/performance.md). Fitting the same statistics again, the same way, on
the quantized model's own features of the same goods makes the head describe the features it will be given.
Nothing is tuned: each statistic is the trainer's estimator on the images the trainer used for it.

Names: the statistics are the head's buffers, exported under the ``m.`` prefix of trainer.export's ``_Head``
wrapper; each whitening matrix is found as the MatMul after the Sub of its mean (stored transposed, (D, D)).
A statistic the graph does not carry (a head without the regional fusion, say) is left out.
Needs ``onnxruntime`` and ``onnx``; no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ModelError, require
from .gaussian import fit_gaussian
from .manifest import Manifest, sha256_file

log = logging.getLogger(__name__)

MAP_MEAN, MAP_STD = "m.map_mean", "m.map_std"
GLOB_MEAN, REG_MEAN = "m.glob_mean", "m.reg_mean"
MAP_STATS, SCORE_STATS = "m.map_stats", "m.score_stats"


class GraphChain:
    """The model folder's graphs as ONNX Runtime sessions run in manifest order, one preprocessed input
    (B, 3, H, W) at a time; ``graph_bytes`` replaces a graph's file (an edited head, say)."""

    def __init__(self, model_dir: Path, manifest: Manifest, graph_bytes: dict[str, bytes] | None = None):
        self.manifest = manifest
        self.steps = []
        for g in manifest.graphs:
            self.steps.append(self._step(g, (graph_bytes or {}).get(g.name) or str(Path(model_dir) / g.file)))

    @staticmethod
    def _step(graph, src):
        ort = require("onnxruntime", "cpu", "quantization")
        sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
        return graph, sess, [o.name for o in sess.get_outputs()]

    def replace(self, name: str, graph_bytes: bytes) -> None:
        """Run ``graph_bytes`` in place of graph ``name`` from now on (the other sessions are kept)."""
        self.steps = [self._step(g, graph_bytes) if g.name == name else (g, sess, names)
                      for g, sess, names in self.steps]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every graph input and output for input ``x``, by tensor name."""
        tensors = {self.manifest.input.name: x}
        for g, sess, names in self.steps:
            tensors.update(zip(names, sess.run(names, {t.name: tensors[t.name] for t in g.inputs}), strict=True))
        return tensors


@dataclass
class _Slots:
    """Where the head graph keeps each statistic: initializer names and the tensors they apply to."""

    disc_input: str | None = None  # (B, M, h, w) before the input scaling
    glob: tuple[str, str] | None = None  # (pooled features (B, D), whitening initializer)
    reg: tuple[str, str] | None = None  # (window statistics (B, h, w, Dr), whitening initializer)
    map_stats: bool = False
    score_stats: bool = False


def _locate(model) -> _Slots:
    inits = {i.name for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def centred(mean: str):
        sub = next((n for n in consumers.get(mean, []) if n.op_type == "Sub" and n.input[1] == mean), None)
        if sub is None:
            return None, None
        mm = next((n for n in consumers.get(sub.output[0], []) if n.op_type == "MatMul"), None)
        return sub.input[0], (mm.input[1] if mm is not None and mm.input[1] in inits else None)

    slots = _Slots(map_stats=MAP_STATS in consumers, score_stats=SCORE_STATS in consumers)
    if MAP_MEAN in consumers and MAP_STD in inits:
        slots.disc_input = centred(MAP_MEAN)[0]
    for mean, attr in ((GLOB_MEAN, "glob"), (REG_MEAN, "reg")):
        feats, whiten = centred(mean)
        if feats and whiten:
            setattr(slots, attr, (feats, whiten))
    return slots


class _Moments:
    """Running per-channel (axis 1) or overall mean and sample standard deviation, in float64."""

    def __init__(self, per_channel: bool):
        self.per_channel, self.n, self.s, self.ss = per_channel, 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64)
        axes = tuple(i for i in range(x.ndim) if not (self.per_channel and i == 1))
        self.n += x.size // (x.shape[1] if self.per_channel else 1)
        self.s = self.s + x.sum(axis=axes)
        self.ss = self.ss + (x * x).sum(axis=axes)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.s / self.n
        var = np.maximum(self.ss - self.n * mean * mean, 0.0) / max(self.n - 1, 1)
        return mean, np.maximum(np.sqrt(var), 1e-6)


@dataclass
class RefitReport:
    fitted: list[str] = field(default_factory=list)  # one line per statistic refitted
    train_count: int = 0  # network inputs (images, or tiles) the training-goods statistics came from
    held_out_count: int = 0

    def describe(self) -> str:
        return "; ".join(self.fitted) or "nothing to refit"


def refit_head(model_dir: str | Path, manifest: Manifest, train_inputs: Collection[np.ndarray],
               held_out_inputs: Collection[np.ndarray],
               progress: Callable[[Collection, str], Iterator] | None = None) -> tuple[Manifest, RefitReport]:
    """Refit the head graph's statistics in ``model_dir`` on its own graphs; rewrite the head file in place.

    train_inputs / held_out_inputs: preprocessed network inputs (B, 3, H, W) float32 of the training goods and
    of held-out goods, iterated once resp. twice (a lazy collection keeps memory flat); ``progress(items, desc)``
    wraps each pass. Returns the manifest with the head's new sha256 and the score fusion's new global
    mean/std, and what was refitted. Raises ModelError when no graph computes the manifest's score.
    """
    onnx = require("onnx", "cpu", "quantization")
    from onnx import numpy_helper

    model_dir = Path(model_dir)
    head = next((g for g in manifest.graphs if manifest.score_output in {t.name for t in g.outputs}), None)
    if head is None:
        raise ModelError(f"{model_dir}: no graph computes '{manifest.score_output}'")
    model = onnx.load(str(model_dir / head.file))
    slots = _locate(model)
    report = RefitReport()
    wrap = progress or (lambda it, _desc: it)
    new: dict[str, np.ndarray] = {}

    def updated(extra_outputs: list[str]):
        """A copy of the head with the statistics refitted so far, exposing ``extra_outputs`` as well."""
        m = onnx.ModelProto()
        m.CopyFrom(model)
        for init in m.graph.initializer:
            if init.name in new:
                init.CopyFrom(numpy_helper.from_array(new[init.name].astype(np.float32), init.name))
        present = {o.name for o in m.graph.output}
        for name in extra_outputs:
            if name not in present:
                m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        return m

    def with_outputs(extra_outputs: list[str]) -> bytes:
        return updated(extra_outputs).SerializeToString()

    # 1. training goods: discriminator input scaling and both Gaussians (independent of each other)
    extra = [t for t in (slots.disc_input, slots.glob and slots.glob[0], slots.reg and slots.reg[0]) if t]
    chain = GraphChain(model_dir, manifest, {head.name: with_outputs(extra)})  # backbone sessions made once
    if extra:
        moments, pooled, windows = _Moments(per_channel=True), [], []
        for x in wrap(train_inputs, "head statistics: training goods"):
            t = chain.run(x)
            report.train_count += len(x)
            if slots.disc_input:
                moments.add(t[slots.disc_input])
            if slots.glob:
                pooled.append(t[slots.glob[0]].reshape(len(x), -1))
            if slots.reg:
                w = t[slots.reg[0]][:, ::2, ::2, :]  # every other window: neighbours overlap almost entirely
                windows.append(w.reshape(-1, w.shape[-1]))
        if slots.disc_input and moments.n > 1:
            mean, std = moments.mean_std()
            new[MAP_MEAN], new[MAP_STD] = mean.reshape(1, -1, 1, 1), std.reshape(1, -1, 1, 1)
            report.fitted.append(f"discriminator input scaling ({len(mean)} maps)")
        for label, mean_name, slot, feats in (("image-level", GLOB_MEAN, slots.glob, pooled),
                                              ("regional", REG_MEAN, slots.reg, windows)):
            if slot and feats:
                f = np.concatenate(feats)
                mu, whiten, shrink = fit_gaussian(f)
                new[mean_name], new[slot[1]] = mu[None], np.ascontiguousarray(whiten.T)
                report.fitted.append(f"{label} Gaussian ({f.shape[0]} x {f.shape[1]}, shrinkage {shrink:.4f})")
    # 2. held-out goods: the fusion scales, maps first (the local score is the fused map's max)
    score_fusion = manifest.score_fusion
    if slots.map_stats and {"rstpm_map", "region_map"} <= {t.name for t in head.outputs}:
        chain.replace(head.name, with_outputs([]))
        rstpm, region = _Moments(per_channel=False), _Moments(per_channel=False)
        for x in wrap(held_out_inputs, "head statistics: held-out goods (maps)"):
            t = chain.run(x)
            report.held_out_count += len(x)
            rstpm.add(t["rstpm_map"])
            region.add(t["region_map"])
        (a, b), (c, d) = rstpm.mean_std(), region.mean_std()
        new[MAP_STATS] = np.array([a, b, c, d], dtype=np.float32)
        report.fitted.append("map fusion scales")
    if slots.score_stats and score_fusion is not None:
        stats = next(i for i in model.graph.initializer if i.name == SCORE_STATS)
        old = numpy_helper.to_array(stats).astype(np.float64)
        chain.replace(head.name, with_outputs([]))
        local, glob = [], []
        for x in wrap(held_out_inputs, "head statistics: held-out goods (scores)"):
            t = chain.run(x)
            if not slots.map_stats:
                report.held_out_count += len(x)
            s, g = t[manifest.score_output].astype(np.float64), t[score_fusion.global_output].astype(np.float64)
            # score = (local − a)/b + w·(global − c)/d under the graph's current stats: solve for local
            local.append(old[0] + old[1] * (s - score_fusion.global_weight * (g - old[2]) / old[3]))
            glob.append(g)
        lo, gl = np.concatenate(local), np.concatenate(glob)
        sd = lambda v: max(float(v.std(ddof=1)), 1e-6) if v.size > 1 else 1.0  # noqa: E731
        new[SCORE_STATS] = np.array([lo.mean(), sd(lo), gl.mean(), sd(gl)], dtype=np.float32)
        score_fusion = score_fusion.model_copy(update={"global_mean": float(new[SCORE_STATS][2]),
                                                       "global_std": float(new[SCORE_STATS][3])})
        report.fitted.append("score fusion scales")
    if not new:
        return manifest, report
    onnx.save(updated([]), str(model_dir / head.file))
    graphs = [g.model_copy(update={"sha256": sha256_file(model_dir / g.file)}) if g.name == head.name else g
              for g in manifest.graphs]
    log.info("refitted the head's statistics on its own graphs: %s", report.describe())
    return manifest.model_copy(update={"graphs": graphs, "score_fusion": score_fusion}), report
