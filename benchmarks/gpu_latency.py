"""GPU latency without TensorRT: the model's five networks in PyTorch on CUDA, per network and end to end.

A **torch proxy, not a TensorRT figure.** Where a CUDA GPU is present but TensorRT is not (and cannot be
installed), this measures what can be measured: the same five networks the model folder exports
(teacher1, student1, teacher2, student2, the map head; ``trainer.export`` wrappers, so the same inputs and
outputs as the ONNX graphs) in fp16, replayed as CUDA graphs (``--runner cudagraph``, default) or
compiled (``--runner compile``: ``torch.compile``, max-autotune without CUDA graphs) or eager.
Median and p99 after warm-up, batch 1 and 8. On a machine with TensorRT use ``scripts/gpu-check.sh``.

  python benchmarks/gpu_latency.py --run RUN_DIR                  # a trained run (model.pt)
  python benchmarks/gpu_latency.py --untrained edge               # random weights: timing only
  python benchmarks/gpu_latency.py --untrained edge --device cpu --runs 3 --warmup 1 --batch 1   # smoke test

Timing: ``time.perf_counter`` around each call with ``torch.cuda.synchronize()`` after it (on CUDA), so a
figure is wall time on the host for one call, launch overhead included. On the CPU it runs fp32 eager
(fp16 and CUDA graphs are CUDA-only) and only proves the script works.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RUNNERS = ("cudagraph", "compile", "eager")


def build_model(run: str | None, untrained: str | None, image_size: str | None):
    """(RSTPM in eval mode, input (H, W), what it is)."""
    if run:
        from trainer.train import input_spec, load_trained

        model, cfg, _ = load_trained(run)
        return model, input_spec(cfg).hw, f"trained run {run}"
    from trainer.config import make_config
    from trainer.model import RSTPM

    cfg = make_config(untrained, {"image_size": image_size} if image_size else None)
    hw = tuple(cfg.image_size) if cfg.image_size else (256, 256)  # unset: what a square data set gets
    model = RSTPM(cfg.model, hw, pretrained=False).eval()
    return model, hw, f"profile {untrained}, random weights (timing only)"


def stats(samples_s: list[float]) -> dict:
    ms = np.asarray(samples_s) * 1000.0
    return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "runs": int(ms.size)}


class Timed:
    """One callable on fixed inputs, prepared for the runner: CUDA graph replay, compiled, or eager."""

    def __init__(self, fn, args: tuple, runner: str, device: str):
        import torch

        self.device = device
        self.args = args
        if runner == "cudagraph" and device == "cuda":
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up on a side stream before capture, as PyTorch asks
                for _ in range(3):
                    fn(*args)
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = fn(*args)
            self.call = self.graph.replay
        elif runner == "compile":
            compiled = torch.compile(fn, mode="max-autotune-no-cudagraphs" if device == "cuda" else "default")
            self.call = lambda: compiled(*args)
        else:
            self.call = lambda: fn(*args)

    def time(self, runs: int, warmup: int) -> dict:
        import torch

        sync = torch.cuda.synchronize if self.device == "cuda" else (lambda: None)
        for _ in range(warmup):
            self.call()
        sync()
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.call()
            sync()
            samples.append(time.perf_counter() - t0)
        return stats(samples)


def measure(model, size: tuple[int, int], device: str, dtype_name: str, runner: str, batch: int, runs: int,
            warmup: int) -> dict:
    """Per network and end to end (the five networks chained in one callable) for one batch size."""
    import torch

    from trainer.export import _graphs

    dtype = {"fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    model = model.to(device=device, dtype=dtype)
    x = torch.randn(batch, 3, *size, device=device, dtype=dtype)
    graphs = _graphs(model)
    res: dict = {"per_network": {}}
    with torch.inference_mode():
        tensors = {"image": x}
        for _, wrapper, in_names, out_names in graphs:
            outs = wrapper(*(tensors[n] for n in in_names))
            tensors.update(zip(out_names, outs, strict=True))
        for name, wrapper, in_names, _ in graphs:
            args = tuple(tensors[n] for n in in_names)
            res["per_network"][name] = Timed(wrapper, args, runner, device).time(runs, warmup)

        def chain(image):
            t = {"image": image}
            for _, wrapper, in_names, out_names in graphs:
                t.update(zip(out_names, wrapper(*(t[n] for n in in_names)), strict=True))
            return t["score"], t["anomaly_map"]

        res["end_to_end"] = Timed(chain, (x,), runner, device).time(runs, warmup)
        score, amap = chain(x)
        res["outputs_finite"] = bool(torch.isfinite(score).all() and torch.isfinite(amap).all())
    res["sum_of_networks_median_ms"] = sum(v["median_ms"] for v in res["per_network"].values())
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="training run folder (model.pt)")
    src.add_argument("--untrained", metavar="PROFILE", help="a profile's networks with random weights")
    ap.add_argument("--image-size", metavar="HxW", help="with --untrained: input size, HxW or N (default 256x256)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--dtype", default=None, choices=["fp16", "fp32"], help="default fp16 on cuda, fp32 on cpu")
    ap.add_argument("--runner", default="cudagraph", choices=RUNNERS)
    ap.add_argument("--batch", type=int, action="append", help="batch sizes (default 1 and 8)")
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: nothing measured (use --device cpu for a smoke test)")
        return 3
    dtype = args.dtype or ("fp16" if args.device == "cuda" else "fp32")
    runner = args.runner if args.device == "cuda" or args.runner != "cudagraph" else "eager"
    model, size, what = build_model(args.run, args.untrained, args.image_size)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    result = {"label": "torch proxy, NOT a TensorRT figure", "model": what, "device": device_name,
              "torch": torch.__version__, "dtype": dtype, "runner": runner, "input": list(size),
              "runs": args.runs, "warmup": args.warmup, "batches": {}}
    print(f"GPU latency, torch proxy (NOT TensorRT): {what}; {device_name}, torch {torch.__version__}, {dtype}, "
          f"{runner}, input {size[0]}x{size[1]}, {args.runs} runs after {args.warmup} warm-up")
    for batch in args.batch or [1, 8]:
        r = measure(model, size, args.device, dtype, runner, batch, args.runs, args.warmup)
        result["batches"][str(batch)] = r
        print(f"batch {batch}:")
        for name, s in r["per_network"].items():
            print(f"  {name:<14} median {s['median_ms']:8.3f} ms  p99 {s['p99_ms']:8.3f} ms")
        e = r["end_to_end"]
        print(f"  {'end to end':<14} median {e['median_ms']:8.3f} ms  p99 {e['p99_ms']:8.3f} ms  "
              f"({1000.0 * batch / e['median_ms']:.0f} images/s; outputs finite: {r['outputs_finite']})")
    if args.device == "cuda" and dtype == "fp16":
        e1 = result["batches"].get("1", {}).get("end_to_end")
        if e1:
            ok = e1["median_ms"] <= 2.0
            print(f"target (issue 18): end to end <= 2 ms at batch 1, fp16: {'PASS' if ok else 'MISS'} "
                  f"({e1['median_ms']:.3f} ms, torch proxy)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
