#!/usr/bin/env bash
# Install the real counterparts the camera tests use (Debian 12): Aravis's fake GigE Vision camera
# with its GObject-introspection bindings, and a GStreamer RTSP server on loopback.
# Idempotent: installs only what is missing. Usage: scripts/ci-counterparts-camera.sh [VENV] (default .venv)
set -euo pipefail

VENV="${1:-.venv}"
APT_PACKAGES=(
  aravis-tools aravis-tools-cli gir1.2-aravis-0.8
  gir1.2-gst-rtsp-server-1.0 gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
  libgirepository1.0-dev libcairo2-dev pkg-config iproute2 util-linux
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "camera counterparts: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "camera counterparts: apt packages already installed"
fi

# PyGObject 3.51+ needs girepository-2.0, which Debian 12 lacks.
if ! "$VENV/bin/python" -c "import gi" 2>/dev/null; then
  "$VENV/bin/pip" install -q 'pygobject<3.51'
fi

"$VENV/bin/python" - <<'PY'
import gi
gi.require_version("Aravis", "0.8")
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Aravis, Gst, GstRtspServer  # noqa: F401
Gst.init(None)
missing = [e for e in ("videotestsrc", "x264enc", "rtph264pay", "jpegenc", "rtpjpegpay") if not Gst.ElementFactory.find(e)]
if missing:
    raise SystemExit(f"camera counterparts: GStreamer elements missing: {missing}")
print("camera counterparts: Aravis", Aravis._version, "|", Gst.version_string(), "| RTSP server ok")
PY
