#!/usr/bin/env bash
# Install edge-inspect as a systemd service on a Jetson (JetPack 6: Ubuntu 22.04, Python 3.10, systemd 249).
#
#   sudo deploy/install.sh --model /path/to/exported-model [--start]
#   sudo deploy/install.sh --uninstall [--purge]
#
# Layout (see docs/deploy.md):
#   /opt/edge-inspect/venv              virtualenv with --system-site-packages: JetPack's tensorrt and
#                                       GStreamer-enabled OpenCV stay visible; no OpenCV from PyPI here
#   /etc/edge-inspect/config.toml       settings (kept on reinstall; config.example.toml is refreshed)
#   /etc/edge-inspect/curve/            CURVE server key pair (secret: root-only, passed as a credential),
#                                       clients/ holds the PLC gateways' public keys
#   /var/lib/edge-inspect/model/        the exported model folder; engines are built into it
#   /etc/systemd/system/edge-inspect{,-engines}.service
#   /usr/lib/sysusers.d/edge-inspect.conf  the service user, in the video and render groups
#
# Idempotent: a second run changes nothing that is already in place. --root DIR installs into DIR as
# if it were / (no apt, no systemd manager calls; enabling uses `systemctl --root`), which is how the
# tests exercise this script on a machine that is not a Jetson. --dry-run prints what it would do.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: install.sh [options]
  --model DIR      copy this exported model folder to /var/lib/edge-inspect/model
  --start          (re)start the service after installing
  --uninstall      stop and remove the units, the virtualenv and the sysusers entry;
                   config, keys and model are kept (see --purge)
  --purge          with --uninstall: also remove /etc/edge-inspect, /var/lib/edge-inspect
                   and /var/cache/edge-inspect
  --source SPEC    what pip installs (default: the checkout this script is in; or a wheel file)
  --python PATH    interpreter for the virtualenv (default /usr/bin/python3: JetPack's tensorrt
                   bindings are built for it)
  --no-venv        do not create the virtualenv or run pip (it is managed some other way)
  --no-apt         do not apt-get install missing build prerequisites
  --root DIR       install into DIR as if it were / (DESTDIR-style); alias: --prefix
  --dry-run        print what would be done, change nothing
  -h, --help       this help
EOF
}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$SCRIPT_DIR")

ROOT=""
DRY_RUN=0
UNINSTALL=0
PURGE=0
START=0
WITH_VENV=1
WITH_APT=1
MODEL_SRC=""
SOURCE="$REPO_DIR"
PYTHON=/usr/bin/python3

while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL_SRC=${2:?--model needs a folder}; shift ;;
        --start) START=1 ;;
        --uninstall) UNINSTALL=1 ;;
        --purge) PURGE=1 ;;
        --source) SOURCE=${2:?--source needs a path}; shift ;;
        --python) PYTHON=${2:?--python needs a path}; shift ;;
        --no-venv) WITH_VENV=0 ;;
        --no-apt) WITH_APT=0 ;;
        --root | --prefix) ROOT=${2:?$1 needs a folder}; shift ;;
        --dry-run) DRY_RUN=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ -n "$ROOT" ]; then
    case "$ROOT" in
        /*) ROOT=${ROOT%/} ;;
        *) echo "install.sh: --root must be an absolute path, got '$ROOT'" >&2; exit 2 ;;
    esac
fi
if [ "$PURGE" = 1 ] && [ "$UNINSTALL" = 0 ]; then
    echo "install.sh: --purge only goes with --uninstall" >&2
    exit 2
fi

# Final paths (as the service sees them) and where they are written (under --root).
OPT=/opt/edge-inspect
VENV=$OPT/venv
ETC=/etc/edge-inspect
STATE=/var/lib/edge-inspect
CACHE=/var/cache/edge-inspect
UNIT_DIR=/etc/systemd/system
SYSUSERS=/usr/lib/sysusers.d/edge-inspect.conf
UNITS="edge-inspect.service edge-inspect-engines.service"
SERVICE_USER=edge-inspect

log() { echo "edge-inspect install: $*" >&2; }
# "installed X" / "would install X" (under --dry-run).
did() {  # did VERB PAST-TENSE PATH
    if [ "$DRY_RUN" = 1 ]; then log "would $1 $3"; else log "$2 $3"; fi
}
die() { log "error: $*"; exit 1; }

# Run a command that changes the system, or show it under --dry-run.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '+'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

# Is this a real install onto the running system (not --root, not --dry-run)?
live() { [ -z "$ROOT" ] && [ "$DRY_RUN" = 0 ]; }

ensure_dir() {  # ensure_dir PATH MODE
    if [ ! -d "$ROOT$1" ]; then
        run install -d -m "$2" "$ROOT$1"
    fi
}

# Copy a file only when its content or mode differs, so a second run touches nothing.
install_file() {  # install_file SRC DEST MODE
    local src=$1 dest=$ROOT$2 mode=$3
    if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
        return 0
    fi
    run install -D -m "$mode" "$src" "$dest"
    did install installed "$2"
}

remove_path() {
    if [ -e "$ROOT$1" ] || [ -L "$ROOT$1" ]; then
        run rm -rf -- "$ROOT$1"
        did remove removed "$1"
    fi
}

systemctl_cmd() {
    if [ -n "$ROOT" ]; then
        run systemctl --root="$ROOT" "$@"
    else
        run systemctl "$@"
    fi
}

# uid:gid of the service user inside the target root (numeric, so --root works without the user on the host).
service_ids() {
    local passwd=$ROOT/etc/passwd
    [ -f "$passwd" ] || return 1
    awk -F: -v u="$SERVICE_USER" '$1 == u { print $3 ":" $4; found = 1 } END { exit !found }' "$passwd"
}

check_root() {
    if live && [ "$(id -u)" != 0 ]; then
        die "run as root (sudo), or use --dry-run / --root DIR"
    fi
}

install_prerequisites() {
    [ "$WITH_APT" = 1 ] && [ "$WITH_VENV" = 1 ] && [ -z "$ROOT" ] || return 0
    # python3-venv for the virtualenv; python3-dev and build-essential because pip builds pycuda
    # from source against JetPack's CUDA. Nothing else: TensorRT and OpenCV come with JetPack.
    local missing=() pkg
    for pkg in python3-venv python3-dev python3-pip build-essential; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        run apt-get update
        run apt-get install -y --no-install-recommends "${missing[@]}"
    fi
}

warn_if_not_jetpack() {
    [ -z "$ROOT" ] || return 0
    if [ ! -f /etc/nv_tegra_release ]; then
        log "warning: /etc/nv_tegra_release not found: this does not look like a Jetson (JetPack); continuing"
    fi
}

# Does the service user exist with both supplementary groups? (Then sysusers has nothing to do.)
user_complete() {
    service_ids >/dev/null || return 1
    local group
    for group in video render; do
        awk -F: -v g="$group" -v u="$SERVICE_USER" \
            '$1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) ok = 1 } END { exit !ok }' \
            "$ROOT/etc/group" || return 1
    done
}

create_user() {
    local tmp
    tmp=$(mktemp)
    # System user with its home in the state directory and no login shell; video: camera, nvhost and
    # nvmap nodes on L4T; render: /dev/dri/renderD*. sysusers creates a missing group instead of failing.
    cat >"$tmp" <<EOF
# edge-inspect service user (installed by deploy/install.sh)
u $SERVICE_USER - "edge-inspect line inspection" $STATE
m $SERVICE_USER video
m $SERVICE_USER render
EOF
    install_file "$tmp" "$SYSUSERS" 0644
    rm -f "$tmp"
    ensure_dir /etc 0755
    user_complete && return 0
    if [ -n "$ROOT" ]; then
        run systemd-sysusers --root="$ROOT" "$ROOT$SYSUSERS"
    else
        run systemd-sysusers "$SYSUSERS"
    fi
}

create_venv() {
    [ "$WITH_VENV" = 1 ] || { log "skipping the virtualenv (--no-venv)"; return 0; }
    if [ -n "$ROOT" ]; then
        log "note: a virtualenv made under --root keeps that path in its scripts (not relocatable)"
    fi
    if [ ! -x "$ROOT$VENV/bin/python" ]; then
        # --system-site-packages: JetPack installs tensorrt and its OpenCV (with GStreamer, for CSI
        # and hardware-decoded RTSP) into the system Python; a plain venv would not see them.
        run "$PYTHON" -m venv --system-site-packages "$ROOT$VENV"
        did create created "$VENV"
    fi
    # pycuda is built from source here: it needs nvcc and the CUDA headers of JetPack.
    export PATH="/usr/local/cuda/bin:$PATH" CUDA_ROOT=/usr/local/cuda
    # numpy<2: JetPack's OpenCV and TensorRT bindings are built against numpy 1.x.
    # Not the [cpu] or [opencv] extras: a PyPI OpenCV wheel would shadow JetPack's, which has GStreamer.
    run "$ROOT$VENV/bin/pip" install --disable-pip-version-check --upgrade-strategy only-if-needed \
        "numpy>=1.24,<2" "${SOURCE}[jetson]"
    if live; then
        "$VENV/bin/python" - <<'EOF' || log "warning: see above; docs/deploy.md 'Troubleshooting'"
import sys
try:
    import cv2
except ImportError:
    sys.exit("edge-inspect install: warning: no OpenCV visible (JetPack's python3 OpenCV expected)")
gst = "GStreamer:                   YES" in cv2.getBuildInformation()
print(f"edge-inspect install: OpenCV {cv2.__version__} from {cv2.__file__}, GStreamer: {'yes' if gst else 'NO'}")
try:
    import tensorrt
    print(f"edge-inspect install: TensorRT {tensorrt.__version__}")
except ImportError:
    sys.exit("edge-inspect install: warning: tensorrt not importable (install JetPack's python3-libnvinfer)")
if not gst:
    sys.exit("edge-inspect install: warning: this OpenCV has no GStreamer (a pip OpenCV shadows JetPack's?)")
EOF
    fi
}

install_files() {
    ensure_dir $OPT 0755
    ensure_dir $ETC 0755
    # 0755: the service user reads clients/ (public keys); the secret key file itself is 0600 root.
    ensure_dir $ETC/curve 0755
    ensure_dir $ETC/curve/clients 0755
    install_file "$SCRIPT_DIR/config.example.toml" $ETC/config.example.toml 0644
    if [ ! -f "$ROOT$ETC/config.toml" ]; then
        # First install only: never overwrite the operator's settings.
        install_file "$SCRIPT_DIR/config.example.toml" $ETC/config.toml 0644
    fi
    if [ -f "$REPO_DIR/docs/deploy.md" ]; then
        install_file "$REPO_DIR/docs/deploy.md" $OPT/share/doc/deploy.md 0644
    fi
    local unit
    for unit in $UNITS; do
        install_file "$SCRIPT_DIR/$unit" "$UNIT_DIR/$unit" 0644
    done
}

install_model() {
    [ -n "$MODEL_SRC" ] || return 0
    [ -f "$MODEL_SRC/manifest.json" ] || die "--model $MODEL_SRC: no manifest.json there (an exported model folder is expected)"
    ensure_dir $STATE 0750
    ensure_dir $STATE/model 0750
    local f rel changed=0
    # Copy file by file: engines already built into the folder are kept when only the ONNX graphs or
    # the manifest are updated (the engines unit then decides whether they are stale).
    while IFS= read -r -d '' f; do
        rel=${f#"$MODEL_SRC"/}
        if ! cmp -s "$f" "$ROOT$STATE/model/$rel"; then
            run install -D -m 0640 "$f" "$ROOT$STATE/model/$rel"
            changed=1
        fi
    done < <(find "$MODEL_SRC" -type f -print0)
    if [ "$changed" = 1 ]; then
        log "installed model from $MODEL_SRC into $STATE/model"
    fi
    local ids
    if ids=$(service_ids); then
        # The engines unit writes engines and the timing cache into the model folder as the service user.
        if [ "$changed" = 1 ] || [ "$(stat -c %u:%g "$ROOT$STATE/model")" != "$ids" ]; then
            run chown -R "$ids" "$ROOT$STATE"
        fi
    elif [ "$DRY_RUN" = 0 ]; then
        die "user $SERVICE_USER missing in $ROOT/etc/passwd"
    fi
}

create_curve_keys() {
    local secret=$ROOT$ETC/curve/server.key_secret
    [ -f "$secret" ] && return 0
    # The service's LoadCredential= needs this file to exist (even while CURVE is off on loopback).
    local py=$PYTHON
    [ -x "$ROOT$VENV/bin/python" ] && py=$ROOT$VENV/bin/python
    if [ "$DRY_RUN" = 1 ]; then
        printf '+ %q -m edge_inspect keys --out %q --name server\n' "$py" "$ROOT$ETC/curve"
        return 0
    fi
    if "$py" -c "import edge_inspect.cli.keys_cmd" 2>/dev/null; then
        "$py" -m edge_inspect keys --out "$ROOT$ETC/curve" --name server >/dev/null
    elif "$py" -c "import zmq.auth" 2>/dev/null; then
        (umask 077 && "$py" -c 'import sys, zmq.auth; zmq.auth.create_certificates(sys.argv[1], "server")' "$ROOT$ETC/curve")
    else
        log "warning: neither edge-inspect nor pyzmq for $py: create the CURVE key pair later (docs/deploy.md);"
        log "warning: until $ETC/curve/server.key_secret exists the service fails with 243/CREDENTIALS"
        return 0
    fi
    chmod 0600 "$secret"
    chmod 0644 "$ROOT$ETC/curve/server.key"
    log "created the CURVE server key pair in $ETC/curve (give server.key, the public one, to the PLC gateway)"
}

enable_units() {
    if [ -z "$ROOT" ]; then
        systemctl_cmd daemon-reload
    fi
    if ! { [ "$DRY_RUN" = 0 ] && systemctl_cmd is-enabled --quiet edge-inspect.service 2>/dev/null; }; then
        systemctl_cmd enable edge-inspect.service
    fi
    if [ "$START" = 1 ]; then
        if [ -n "$ROOT" ]; then
            log "--start ignored with --root"
        else
            systemctl_cmd restart edge-inspect.service
        fi
    fi
}

do_install() {
    check_root
    warn_if_not_jetpack
    install_prerequisites
    create_user
    install_files
    create_venv
    install_model
    create_curve_keys
    enable_units
    log "done. Next: edit $ETC/config.toml, then: sudo systemctl start edge-inspect; systemctl status edge-inspect"
}

do_uninstall() {
    check_root
    local unit
    if [ -z "$ROOT" ]; then
        for unit in $UNITS; do
            if [ "$DRY_RUN" = 1 ] || systemctl cat "$unit" >/dev/null 2>&1; then
                systemctl_cmd disable --now "$unit" || true
            fi
        done
    elif [ -f "$ROOT$UNIT_DIR/edge-inspect.service" ]; then
        systemctl_cmd disable edge-inspect.service
    fi
    for unit in $UNITS; do
        remove_path "$UNIT_DIR/$unit"
    done
    if [ -z "$ROOT" ]; then
        systemctl_cmd daemon-reload
    fi
    remove_path $OPT
    remove_path $SYSUSERS
    if [ "$PURGE" = 1 ]; then
        remove_path $ETC
        remove_path $STATE
        remove_path $CACHE
    else
        log "kept $ETC (config, keys) and $STATE (model, engines); --purge removes them"
    fi
    # The account stays: files or logs may still carry its uid, and a reused uid would own them.
    log "the user $SERVICE_USER is kept; remove it with: userdel $SERVICE_USER"
}

if [ "$UNINSTALL" = 1 ]; then
    do_uninstall
else
    do_install
fi
