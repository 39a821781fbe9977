#!/usr/bin/env bash
# Make a virtual X display available for the full-Krita GUI test (tests/krita/test_krita_gui.py).
#
# Usage: tests/krita/xvfb.sh
#   Idempotent: installs xvfb + xauth via apt when `Xvfb` is missing (needs root or sudo and
#   the Debian mirror), then prints the path of Xvfb as the last line of stdout.
#   Krita's main window needs an X server (it ignores QT_QPA_PLATFORM=offscreen); kritarunner
#   does not, which is why only the GUI test needs this.
set -euo pipefail

die() { echo "xvfb.sh: ERROR: $*" >&2; exit 1; }

if ! command -v Xvfb >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "Xvfb not found and apt-get is unavailable; install Xvfb manually"
    SUDO=
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "Xvfb not found; need root (or sudo) to apt-get install xvfb xauth"
        SUDO=sudo
    fi
    log=$(mktemp /tmp/restora-xvfb-apt.XXXXXX.log)
    echo "xvfb.sh: installing xvfb xauth via apt (log: $log) ..." >&2
    if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends xvfb xauth >"$log" 2>&1; then
        $SUDO apt-get update -q >>"$log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends xvfb xauth >>"$log" 2>&1 ||
            { tail -n 20 "$log" >&2; die "apt-get install xvfb xauth failed (log: $log)"; }
    fi
    rm -f "$log"
fi
command -v Xvfb
