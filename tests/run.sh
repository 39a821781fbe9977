#!/usr/bin/env bash
# The test command: sets up what the tests need on a Debian machine, then runs pytest.
#   bash tests/run.sh [pytest args...]
# System packages come from apt (when run as root and missing), the backend's venv from
# installer/setup.py, Krita from tests/editors/krita.sh and the GIMP 3 root (cached outside the
# clone) from tests/editors/gimp_root.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# OpenCV needs libGL/glib; the ncnn engine the importer is checked against needs Vulkan's loader
# and Mesa's CPU driver; the GIMP dialog tests draw on Xvfb and type through XTest.
need=()
for pkg in libgl1 libglib2.0-0 libvulkan1 libomp5-14 mesa-vulkan-drivers xvfb libxtst6; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: missing system packages: ${need[*]} (install them with apt-get)" >&2
    exit 1
  fi
  echo "Installing system packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ -x tests/editors/krita.sh ] || [ -f tests/editors/krita.sh ]; then
  bash tests/editors/krita.sh >/dev/null
fi
if [ -f tests/editors/gimp_root.sh ]; then
  RESTORA_GIMP_ROOT="$(bash tests/editors/gimp_root.sh | tail -n 1)"
  export RESTORA_GIMP_ROOT
fi

# A Python with PyQt6 (cached outside the clone) so the Krita docker is also checked under Qt 6,
# as Krita 6 will run it.
cache="${RESTORA_CACHE:-$HOME/.cache/restora}"
qt6="$cache/pyqt6-venv-1"
if [ ! -x "$qt6/bin/python" ] || ! "$qt6/bin/python" -c "import PyQt6.QtWidgets" 2>/dev/null; then
  rm -rf "$qt6.tmp"
  python3 -m venv "$qt6.tmp"
  "$qt6.tmp/bin/pip" install -q --disable-pip-version-check PyQt6
  rm -rf "$qt6" && mv "$qt6.tmp" "$qt6"
fi
export RESTORA_PYQT6_PYTHON="$qt6/bin/python"

python3 installer/setup.py --dev --skip-models
exec .venv/bin/python -m pytest "$@"
