#!/usr/bin/env bash
# Headless Chromium and its matching driver for the live-view browser test (tests/view/test_browser.py),
# and Selenium in the venv. Root + apt only; run by scripts/install-test-deps.sh.
set -euo pipefail
venv=${1:-.venv}
export DEBIAN_FRONTEND=noninteractive
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || {
  apt-get update -qq
  apt-get install -y -qq chromium chromium-driver
}
if [ -x "$venv/bin/pip" ]; then "$venv/bin/pip" install -q 'selenium>=4.20'; fi
