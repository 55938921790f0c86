#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU (Jetson or x86), build TensorRT engines for a small exported
# model, verify them against ONNX Runtime, and print latency per engine and end to end (median, p99),
# for fp16 and fp32. Checks first what the machine has and says clearly what is missing.
#
#   scripts/gpu-check.sh [--model MODEL_DIR] [--python PY] [--out DIR] [--runs N] [--warmup N] [--tiny]
#
# Without --model it exports a small edge-profile model itself (synth → train with tiny settings →
# export; torch needed) or, with --tiny or when that is impossible, uses the 2-graph test fixture.
# Exit: 0 all checks ran, 3 something needed is missing (named on stdout), other: a step failed.
set -uo pipefail

py=${PYTHON:-}
model=""
out=${GPU_CHECK_OUT:-gpu-check-out}
runs=500
warmup=50
tiny=0
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --python) py=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --tiny) tiny=1; shift ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
ei=("$py" -m edge_inspect)
mkdir -p "$out"

echo "== 1/4 what this machine has"
missing=()
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
elif [ -e /etc/nv_tegra_release ]; then
  echo "Jetson: $(head -1 /etc/nv_tegra_release)"
else
  echo "nvidia-smi: absent and not a Jetson"
fi
for mod in tensorrt pycuda onnxruntime numpy onnx; do
  ver=$("$py" -c "import $mod, sys; print(getattr($mod, '__version__', getattr($mod, 'VERSION_TEXT', 'ok')))" 2>/dev/null)
  if [ -n "$ver" ]; then echo "  $mod $ver"; else echo "  $mod MISSING"; missing+=("$mod"); fi
done
"$py" -c "import onnxruntime as o; p=o.get_available_providers(); print('  onnxruntime providers:', ','.join(p)); \
print('  (onnxruntime-gpu not installed: the reference runs on CPU, which is what verification wants)' \
if 'CUDAExecutionProvider' not in p else '')" 2>/dev/null || true
"$py" -c "import torch; print('  torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'no cuda')" \
  2>/dev/null || echo "  torch absent (only needed to export a model here)"
"$py" -m engines.env
env_rc=$?
if [ ${#missing[@]} -gt 0 ] || [ $env_rc -ne 0 ]; then
  echo "MISSING: ${missing[*]:-} (see the line above); TensorRT comes with JetPack 6 or NVIDIA's tensorrt wheels,"
  echo "pycuda with: pip install 'edge-inspect[jetson]'. Nothing was built."
  exit 3
fi

echo "== 2/4 model"
if [ -z "$model" ] && [ $tiny -eq 0 ]; then
  if "$py" -c "import torch" 2>/dev/null; then
    model="$out/model"
    if ! { "${ei[@]}" synth --out "$out/data" --category widget --n-train 16 --n-test-good 4 --size 256 --seed 0 \
           && "${ei[@]}" train --data "$out/data" --category widget --out "$out/run" --profile edge --epochs1 1 \
                --epochs2 1 --max-train-images 16 --batch-size 8 --quiet \
           && "${ei[@]}" export --run "$out/run" --out "$model"; }; then
      echo "export failed; falling back to the tiny test model"; model=""
    fi
  else
    echo "torch absent: cannot export the edge model here; using the tiny test model"
  fi
fi
if [ -z "$model" ]; then
  model="$out/tiny-model"
  "$py" -c "from tests.fixtures.tiny_model import make_tiny_model; make_tiny_model('$model')" || exit 1
fi
verify=()
if [ -d "$out/data/widget/test" ]; then verify=(--verify-images "$out/data/widget/test"); fi
echo "model: $model"

status=0
for precision in fp16 fp32; do
  echo "== 3/4 build + verify ($precision)"
  if ! "${ei[@]}" -v build --model "$model" --precision "$precision" "${verify[@]}"; then
    echo "build/verify FAILED for $precision"; status=1; continue
  fi
  echo "== 4/4 latency ($precision, $runs runs after $warmup warm-up)"
  "$py" benchmarks/engines.py --model "$model" --runs "$runs" --warmup "$warmup" \
    --json "$out/bench-$precision.json" || status=1
done
echo "reports: $out/bench-fp16.json $out/bench-fp32.json"
exit $status
