#!/usr/bin/env bash
# Run a command inside the GIMP 3 root made by gimp_root.sh.
#
# Usage: tests/editors/gimp_run.sh ROOT CMD [ARGS...]
#   e.g. gimp_run.sh "$ROOT" gimp-console-3.0 -i -n \
#            --batch-interpreter python-fu-eval -b - --quit < script.py
#   Exit status is CMD's (124 on timeout). stdin/stdout/stderr are passed
#   through. gimp-console-3.0 exits 0 when every batch command succeeded and
#   64 when one raised (the traceback is on stderr).
#
# Env (all optional):
#   GIMP_HOME         HOME for CMD, as a path INSIDE the root (e.g.
#                     /tmp/my-home). Created if missing and NOT deleted. Use
#                     it to install plug-ins before the run, at
#                     $ROOT$GIMP_HOME/.config/GIMP/3.0/plug-ins/NAME/NAME.
#                     Default: a fresh $ROOT/tmp/gimp-home-XXXXXX, deleted
#                     when the command ends.
#   GIMP_RUN_SEED=0   do not pre-fill HOME from the warmed seed home (see below)
#   GIMP_RUN_TIMEOUT  seconds before CMD is killed (default 300; 0 = none)
#   GIMP_RUN_PROC=1   also mount /proc in the root (private mount namespace)
#
# The environment inside is minimal (env -i): HOME, PATH, LANG=C.UTF-8,
# TMPDIR=/tmp. Pass more with `gimp_run.sh ROOT env VAR=value CMD ...`.
#
# Mounts: NONE are needed. Measured with GIMP 3.0.4 in a debootstrap'ed
# trixie root: a plain `chroot ROOT gimp-console-3.0 ...` starts, runs Python
# plug-ins (GIMP talks to plug-ins over pipes; tiles go over that wire, no
# /dev/shm needed), spawns subprocesses and opens TCP connections to the host
# (a chroot shares the host's network namespace, so 127.0.0.1 is the host's
# loopback). debootstrap already created the static /dev nodes (null, zero,
# random, urandom, tty, ...) inside the root. So by default this script only
# chroots and nothing can be left mounted. GIMP_RUN_PROC=1 is for code that
# really needs /proc (e.g. psutil); that mount is made inside a private mount
# namespace (unshare -m), so the kernel removes it when the command ends, even
# if this script is killed.
#
# Seed home: the first GIMP start with an empty HOME queries every plug-in and
# writes pluginrc (~12 s); later starts take ~2 s. So the first call builds a
# warmed HOME once (under a lock) at $ROOT/var/cache/restora/gimp-home-seed
# and every fresh HOME is pre-filled from it. GIMP re-queries only plug-ins
# that are new or changed, so tests may add their own plug-ins freely.
set -euo pipefail

die() { echo "gimp_run.sh: ERROR: $*" >&2; exit 2; }

[ $# -ge 2 ] || die "usage: gimp_run.sh ROOT CMD [ARGS...]"
ROOT=$(readlink -f "$1"); shift
[ -x "$ROOT/usr/bin/gimp-console-3.0" ] || die "$ROOT is not a GIMP 3 root (run tests/editors/gimp_root.sh)"
[ "$(id -u)" -eq 0 ] || die "chroot needs root"

TIMEOUT=${GIMP_RUN_TIMEOUT:-300}
SEED_REL=/var/cache/restora/gimp-home-seed

# in_root HOME_INSIDE CMD...: the one place that enters the root.
in_root() {
    local home=$1; shift
    local envv=(env -i "HOME=$home" PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
                LANG=C.UTF-8 TMPDIR=/tmp)
    local to=()
    [ "$TIMEOUT" != 0 ] && to=(timeout -k 10 "$TIMEOUT")
    if [ "${GIMP_RUN_PROC:-0}" = 1 ]; then
        # /proc only inside a private mount namespace -> auto-unmounted.
        # shellcheck disable=SC2016  # $0/$@ are the inner sh's arguments
        "${to[@]}" unshare --mount --propagation private -- \
            /bin/sh -c 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' \
            "$ROOT" "${envv[@]}" "$@"
    else
        "${to[@]}" chroot "$ROOT" "${envv[@]}" "$@"
    fi
}

# Build the warmed seed home once (~12 s), serialised by a lock.
ensure_seed() {
    [ "${GIMP_RUN_SEED:-1}" = 1 ] || return 0
    [ -f "$ROOT$SEED_REL/.config/GIMP/3.0/pluginrc" ] && return 0
    mkdir -p "$ROOT/var/cache/restora"
    (
        flock 8
        [ -f "$ROOT$SEED_REL/.config/GIMP/3.0/pluginrc" ] && exit 0
        tmp_rel=$(mktemp -d "$ROOT/var/cache/restora/seed.XXXXXX"); tmp_rel=${tmp_rel#"$ROOT"}
        if in_root "$tmp_rel" gimp-console-3.0 -i -n --quit </dev/null >/dev/null 2>&1 &&
           [ -f "$ROOT$tmp_rel/.config/GIMP/3.0/pluginrc" ]; then
            rm -rf "$ROOT$SEED_REL"
            mv -T "$ROOT$tmp_rel" "$ROOT$SEED_REL"
        else
            rm -rf "$ROOT$tmp_rel"
            echo "gimp_run.sh: warning: could not build the seed home; continuing without" >&2
        fi
    ) 8>"$ROOT/var/cache/restora/.seed.lock"
}

# Copy the seed into HOME_ON_HOST unless it already has a pluginrc.
seed_home() {
    [ "${GIMP_RUN_SEED:-1}" = 1 ] || return 0
    [ -f "$ROOT$SEED_REL/.config/GIMP/3.0/pluginrc" ] || return 0
    [ -f "$1/.config/GIMP/3.0/pluginrc" ] && return 0
    cp -a "$ROOT$SEED_REL/." "$1/"
}

HOME_TMP=
# shellcheck disable=SC2317  # called via trap
cleanup() { [ -n "$HOME_TMP" ] && rm -rf --one-file-system "$HOME_TMP"; return 0; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -n "${GIMP_HOME:-}" ]; then
    case $GIMP_HOME in /*) ;; *) die "GIMP_HOME must be an absolute path inside the root" ;; esac
    home_in=$GIMP_HOME
    mkdir -p "$ROOT$home_in"
else
    HOME_TMP=$(mktemp -d "$ROOT/tmp/gimp-home-XXXXXX")
    home_in=${HOME_TMP#"$ROOT"}
fi

ensure_seed
seed_home "$ROOT$home_in"

set +e
in_root "$home_in" "$@"
rc=$?
set -e
exit $rc
