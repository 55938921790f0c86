#!/bin/bash
# On the GPU machine, from the repository root: install the packed wheels, unpack the bundle, optionally
# run a smoke test through the whole CUDA path, then run benchmarks/quality.py once per "NAME:KEY=V,KEY=V"
# argument within BUDGET seconds of the start. Logs, quality.json and the last finished run's model
# folder (as ≤15 MB tar parts) land in $OUT. Example (one call of the device tool, carrying .gpu):
#
#   BUNDLE=.gpu CATEGORY=magnetic_tile BUDGET=580 benchmarks/remote_gpu/run.sh long:epochs1=150,epochs2=100
set -u
T0=$(date +%s)
BUNDLE=${BUNDLE:-.gpu}; CATEGORY=${CATEGORY:-magnetic_tile}; BUDGET=${BUDGET:-580}; OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
if [ -d "$BUNDLE/wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$BUNDLE"/wheels/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:/tmp/stubs:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, onnxruntime; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'onnxruntime', onnxruntime.__version__)"
python3 benchmarks/remote_gpu/unpack.py "$BUNDLE" || exit 1
echo "unpacked at $(( $(date +%s) - T0 )) s"

quality() { # NAME TIMEOUT KEY=V...
  local name=$1 limit=$2; shift 2
  local sets=(); for kv in "$@"; do sets+=(--set "$kv"); done
  local t; t=$(date +%s)
  timeout "$limit" python3 benchmarks/quality.py --data /tmp/data --category "$CATEGORY" --out "/tmp/$name" "${sets[@]}" \
    > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc $rc, $(( $(date +%s) - t )) s"
  grep -v "it/s" "$OUT/$name.log" | tail -n 8
  [ -f "/tmp/$name/quality.json" ] && cp "/tmp/$name/quality.json" "$OUT/$name.quality.json"
  return $rc
}
if [ "${SMOKE:-1}" = 1 ]; then
  quality smoke 150 epochs1=1 epochs2=1 max_train_images=40 pool_factor=0.5 || { echo "smoke run failed"; exit 1; }
fi
last=""
for spec in "$@"; do
  IFS=, read -ra kv <<< "${spec#*:}"
  quality "${spec%%:*}" "$(( $(left) - 5 ))" "${kv[@]}" && last=${spec%%:*}
done
if [ -n "$last" ]; then
  tar -C "/tmp/$last" -cf - model | split -b 15M - "$OUT/$last.model.tar."
fi
