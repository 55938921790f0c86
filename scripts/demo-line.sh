#!/usr/bin/env bash
# The line, end to end on this machine: synthetic camera -> edge-inspect run -> ZeroMQ -> listener.
# Usage: demo-line.sh VENV MODEL_DIR [FRAMES]
set -euo pipefail
venv=$1; model=$2; frames=${3:-${DEMO_FRAMES:-120}}
ei="$venv/bin/edge-inspect"
read -r pub ctl < <("$venv/bin/python" - <<'PY'
import socket
ports = []
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0)); ports.append(s.getsockname()[1])
for s in socks:
    s.close()
print(*ports)
PY
)
log=$(mktemp -d)
# The subscriber starts first so it sees the first verdict; it exits after all frames or 120 s.
timeout_s=$(( frames / 2 + 120 ))
"$ei" listen --json --connect "tcp://127.0.0.1:$pub" --control "tcp://127.0.0.1:$ctl" --count "$frames" --timeout "$timeout_s" \
  > "$log/verdicts.jsonl" 2> "$log/listen.err" &
listener=$!
sleep 1
seed=${DEMO_SEED:-7}; rate=0.3
EDGE_INSPECT_CONTROL__BIND="tcp://127.0.0.1:$ctl" "$ei" run --camera "synthetic://?fps=${DEMO_FPS:-8}&defect_rate=$rate&seed=$seed" --model "$model" --mode lossless \
  --bind "tcp://127.0.0.1:$pub" --max-frames "$frames" 2> "$log/run.err" || {
  echo "edge-inspect run failed:"; tail -5 "$log/run.err"; kill "$listener" 2>/dev/null; exit 1; }
wait "$listener" || true
echo "-- the listener's summary: $(tail -1 "$log/verdicts.jsonl")"
echo "-- verdicts as the PLC gateway received them, each beside the synthetic camera's own truth:"
"$venv/bin/python" scripts/line_truth.py "$log/verdicts.jsonl" --seed "$seed" --defect-rate "$rate" --show 6
