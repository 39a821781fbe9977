#!/usr/bin/env bash
# Run a Python function inside real Krita, headless (kritarunner).
#
# Usage: tests/editors/krita_run.sh MODULE.py FUNC [ARGS...]
#   Imports MODULE.py (its folder goes on PYTHONPATH) inside Krita and calls
#   FUNC(args) where args is the tuple of ARGS (kritarunner always passes
#   exactly one positional argument). stdout/stderr pass through.
#   Exit status: kritarunner's, except that it is forced to 1 when the
#   Python function raised (kritarunner itself exits 0 even then; we detect
#   the 'krita.scripting: "Traceback' line it logs on stderr).
#
# Env (optional):
#   KRITA_HOME          HOME for Krita. Default: a persistent
#                       ${RESTORA_CACHE:-$HOME/.cache/restora}/krita-home.
#                       A fresh HOME costs ~8-15 s on the first start (Krita
#                       builds its resource database there); a warm one <1-2 s.
#   KRITA_RUN_TIMEOUT   seconds before kritarunner is killed (default 300; 0 = none)
#
# Needs Krita installed: run tests/editors/krita.sh first (this script calls
# it, which is a no-op when Krita is there).
set -euo pipefail

die() { echo "krita_run.sh: ERROR: $*" >&2; exit 2; }
[ $# -ge 2 ] || die "usage: krita_run.sh MODULE.py FUNC [ARGS...]"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mod_file=$(readlink -f "$1"); func=$2; shift 2
[ -f "$mod_file" ] || die "no such file: $mod_file"
mod_dir=$(dirname "$mod_file"); mod=$(basename "$mod_file" .py)

KR=$("$HERE/krita.sh" | tail -n 1)
home=${KRITA_HOME:-${RESTORA_CACHE:-$HOME/.cache/restora}/krita-home}
mkdir -p "$home"
[ -d "$home/.runtime" ] || mkdir -m 700 "$home/.runtime"
TIMEOUT=${KRITA_RUN_TIMEOUT:-300}
to=()
[ "$TIMEOUT" != 0 ] && to=(timeout -k 10 "$TIMEOUT")

errlog=$(mktemp /tmp/krita-run-stderr.XXXXXX)
trap 'rm -f "$errlog"' EXIT

set +e
# - QT_QPA_PLATFORM=offscreen: no X display needed.
# - XDG_RUNTIME_DIR: silences Qt's "not set" warning, keeps sockets private.
# - stderr is captured to a file (then replayed) so it can be scanned.
HOME="$home" PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$mod_dir${PYTHONPATH:+:$PYTHONPATH}" \
    QT_QPA_PLATFORM=offscreen XDG_RUNTIME_DIR="$home/.runtime" \
    "${to[@]}" "$KR" -s "$mod" -f "$func" "$@" 2>"$errlog"
rc=$?
set -e
# Drop Krita's resource-database chatter (hundreds of lines on a fresh HOME).
grep -v '^krita.lib.resources:' "$errlog" >&2 || true
if [ $rc -eq 0 ] && grep -q 'krita.scripting: "Traceback' "$errlog"; then
    echo "krita_run.sh: $mod.$func raised inside Krita (see traceback above)" >&2
    rc=1
fi
exit $rc
