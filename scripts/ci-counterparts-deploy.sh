#!/usr/bin/env bash
# Counterparts the deploy tests (tests/deploy, tests/health) need; idempotent, quiet when all is there.
#   package systemd: systemd-analyze (verify, security --offline), systemctl --root, systemd-sysusers
#   package shellcheck: lints deploy/install.sh
set -euo pipefail

missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v systemd-sysusers >/dev/null 2>&1 || missing+=(systemd)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
# Unique package names, in order.
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}"
