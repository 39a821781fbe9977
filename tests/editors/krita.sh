#!/usr/bin/env bash
# Make real Krita (with kritarunner + PyQt5) available for automated tests.
#
# Usage: tests/editors/krita.sh
#   Idempotent. Installs Krita from Debian via apt if `kritarunner` is missing
#   (needs root + access to the Debian mirror), then prints the absolute path of
#   `kritarunner` as the last line of stdout. Takes well under 1 s when Krita
#   is already installed. Exit status is non-zero with a message on stderr if the
#   install fails.
#
# Run Python inside Krita with no window (see README.md):
#   HOME=$(mktemp -d) PYTHONPATH=<dir of mod.py> QT_QPA_PLATFORM=offscreen \
#       kritarunner -s mod -f main
set -euo pipefail

PKGS=(krita python3-pyqt5 python3-pyqt5.sip)

die() { echo "krita.sh: ERROR: $*" >&2; exit 1; }

# Krita embeds the *system* Python (libpython3.x from Debian), so check PyQt5
# with /usr/bin/python3, not whatever python3 is first on PATH (pyenv etc.).
have_krita() {
    command -v kritarunner >/dev/null 2>&1 &&
        /usr/bin/python3 -c 'import PyQt5.QtCore' >/dev/null 2>&1
}

if ! have_krita; then
    command -v apt-get >/dev/null 2>&1 || die "kritarunner not found and apt-get is unavailable; install Krita 5 (with kritarunner) and python3-pyqt5 manually"
    if [ "$(id -u)" -ne 0 ]; then
        SUDO=sudo
        command -v sudo >/dev/null 2>&1 || die "kritarunner not found; need root (or sudo) to apt-get install ${PKGS[*]}"
    else
        SUDO=
    fi
    log=$(mktemp /tmp/restora-krita-apt.XXXXXX.log)
    echo "krita.sh: installing ${PKGS[*]} via apt (log: $log) ..." >&2
    if ! { $SUDO apt-get update -q &&
           DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${PKGS[@]}"; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "apt-get install of ${PKGS[*]} failed (full log: $log)"
    fi
    rm -f "$log"
    have_krita || die "Krita was installed but kritarunner / PyQt5 is still not usable"
fi

command -v kritarunner
