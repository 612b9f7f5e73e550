#!/usr/bin/env bash
# Installs nas into ./.venv on a fresh Debian/Ubuntu machine.
# Steps: Debian packages FFCV compiles against -> virtual environment -> nas with pinned versions.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(libopencv-dev libturbojpeg0-dev pkg-config)
EXTRA_DEB_PACKAGES=("$@")   # e.g. chromium for the browser test (CI passes it)

missing=()
for pkg in "${DEB_PACKAGES[@]}" "${EXTRA_DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; else
        echo "nas setup: cannot install Debian packages without root; run: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "nas setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
# torch is pinned in the same resolve as spikingjelly, so no CUDA build of torch is dragged in.
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import nas, torch, ffcv.libffcv, spikingjelly, ray, optuna, mlflow" \
    || { echo "nas setup: the environment in .venv does not import; see the pip output above" >&2; exit 1; }
echo "nas setup: environment ready in .venv"
