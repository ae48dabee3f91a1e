#!/usr/bin/env bash
# Install maniflow-rl and everything it needs on a fresh Debian/Ubuntu machine (CPU).
#   - Debian packages for headless MuJoCo rendering (EGL / OSMesa)
#   - PyTorch CPU build (GPU users: install the CUDA torch wheel for your driver first, then
#     run this script with MANIFLOW_SKIP_TORCH=1)
#   - maniflow-rl in editable mode with the simulator (MetaWorld, robosuite), test and
#     distributed (Ray) extras
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
  need=()
  for pkg in libegl1 libgl1-mesa-dri libosmesa6; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [ "${MANIFLOW_SKIP_TORCH:-0}" != "1" ]; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[sim,robosuite,test,distributed]"
echo "maniflow-rl installed: $("$PY" -c 'import maniflow_rl; print(maniflow_rl.__version__)')"
