#!/usr/bin/env bash
# System packages the test suite needs on Debian/Ubuntu (as root, non-interactive):
# a one-node SLURM cluster for tests/test_slurm.py and headless Chromium for
# tests/test_browser.py. The pipeline itself needs none of them.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-system-deps.sh: run as root (or install sudo)" >&2; exit 1; }
  SUDO="sudo -n"
fi
PACKAGES=(slurm-wlm munge chromium chromium-driver)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
