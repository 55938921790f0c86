#!/usr/bin/env bash
# Installs the real counterparts some tests use (fake GigE camera, RTSP server, systemd-analyze).
# Only as root with apt-get (CI, a dev box); elsewhere those tests skip with a reason.
set -uo pipefail
venv=${1:-.venv}
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: not root or no apt-get; counterpart tests will be skipped"
  exit 0
fi
for part in "$here"/ci-counterparts-*.sh; do
  [ -f "$part" ] || continue
  echo "install-test-deps: $(basename "$part")"
  bash "$part" "$venv" || echo "install-test-deps: $(basename "$part") failed; its tests will skip"
done
exit 0
