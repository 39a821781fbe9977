#!/usr/bin/env bash
# Build (once) and print a Debian 13 "trixie" root with real GIMP 3 in it.
#
# Usage: tests/editors/gimp_root.sh
#   Prints the absolute path of the root as the LAST line of stdout (progress
#   goes to stderr). Idempotent: when the root already exists it only prints
#   the path (fast). Run programs in it with tests/editors/gimp_run.sh.
#
# Why a chroot: Debian 12 (this host) has only GIMP 2.10; GIMP 3 with the
# Python 3 / GObject-introspection plug-in API is in Debian 13.
#
# Location: ${RESTORA_CACHE:-$HOME/.cache/restora}/gimp3-root-<hash12>, where
# <hash12> is the first 12 hex digits of sha256(this script), so editing this
# script builds a fresh root (old ones are left alone; delete them by hand).
# The root is built in a temp dir next to it and renamed into place only when
# the whole build succeeded, so an interrupted build is never used.
#
# Needs: root (debootstrap/chroot), the Debian mirror (deb.debian.org or a
# proxy for it), ~1.5 GB free disk while building. Installs debootstrap on the
# host via apt if it is missing.
#
# Env:
#   RESTORA_CACHE         cache folder (default $HOME/.cache/restora)
#   RESTORA_DEBIAN_MIRROR mirror URL (default http://deb.debian.org/debian)
set -euo pipefail

die() { echo "gimp_root.sh: ERROR: $*" >&2; exit 1; }
log() { echo "gimp_root.sh: $*" >&2; }

SELF=$(readlink -f "${BASH_SOURCE[0]}")
HASH=$(sha256sum "$SELF" | cut -c1-12)
CACHE=${RESTORA_CACHE:-$HOME/.cache/restora}
ROOT="$CACHE/gimp3-root-$HASH"
MIRROR=${RESTORA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=trixie
PKGS=(gimp python3-gi gir1.2-gimp-3.0)

# Marker written as the very last build step; checked on the fast path.
is_ready() { [ -f "$1/.restora-gimp-root-ok" ] && [ -x "$1/usr/bin/gimp-console-3.0" ]; }

if is_ready "$ROOT"; then
    echo "$ROOT"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building the GIMP 3 root needs root (debootstrap + chroot)"
command -v unshare >/dev/null 2>&1 || die "unshare (util-linux) is required"
mkdir -p "$CACHE"

# Serialise concurrent builders (parallel test runs); re-check after locking.
exec 9>"$CACHE/.gimp3-root.lock"
flock 9
if is_ready "$ROOT"; then
    echo "$ROOT"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
    log "installing debootstrap on the host via apt ..."
    apt_log=$(mktemp /tmp/restora-debootstrap-apt.XXXXXX.log)
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -q --no-install-recommends debootstrap; } >"$apt_log" 2>&1; then
        tail -n 20 "$apt_log" >&2
        die "could not apt-get install debootstrap (log: $apt_log)"
    fi
    rm -f "$apt_log"
fi
DEBOOTSTRAP=$(command -v debootstrap || echo /usr/sbin/debootstrap)

# Leftovers of builds that were killed hard (SIGKILL, power loss). Safe to
# delete: we hold the lock, and a still-running builder would hold it too
# (fd 9 is inherited by all its children).
for stale in "$CACHE"/.gimp3-root-*.building.*; do
    [ -e "$stale" ] || continue
    log "removing stale partial build $stale"
    rm -rf --one-file-system "$stale"
done

TMP=$(mktemp -d "$CACHE/.gimp3-root-$HASH.building.XXXXXX")
BUILD_LOG="$TMP.log"
cleanup() {
    # All mounts made during the build live in a private mount namespace
    # (unshare -m below) and vanish with it, so nothing is mounted under $TMP
    # here. --one-file-system is a second guard against deleting through a
    # stray mount.
    if [ -n "${TMP:-}" ] && [ -d "$TMP" ]; then
        rm -rf --one-file-system "$TMP" || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "building GIMP 3 root in $TMP (log: $BUILD_LOG); takes a few minutes ..."
start=$(date +%s)

# Everything runs inside a private mount namespace: whatever debootstrap or
# the package scripts mount (proc, sys, ...) is torn down by the kernel when
# the namespace's last process exits, even if this script is killed.
# shellcheck disable=SC2016  # the inner script expands its own variables
if ! unshare --mount --propagation private -- env -i \
        PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        TMP="$TMP" MIRROR="$MIRROR" SUITE="$SUITE" PKGS="${PKGS[*]}" \
        DEBOOTSTRAP="$DEBOOTSTRAP" \
        bash -euo pipefail -c '
    "$DEBOOTSTRAP" --variant=minbase "$SUITE" "$TMP" "$MIRROR"

    # Keep the root small: no docs/man pages/translations (tests run in C locale).
    cat > "$TMP/etc/dpkg/dpkg.cfg.d/01restora-nodoc" <<CFG
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/help/*
path-exclude=/usr/share/gimp/3.0/help/*
CFG
    # Mirrors/proxies that serve a frozen snapshot have expired Release files;
    # AppStream metadata is not needed; never pull recommends.
    cat > "$TMP/etc/apt/apt.conf.d/99restora" <<CFG
Acquire::Check-Valid-Until "false";
Acquire::Check-Date "false";
Acquire::IndexTargets::deb::DEP-11 { DefaultEnabled "false"; };
Acquire::IndexTargets::deb::DEP-11-icons { DefaultEnabled "false"; };
APT::Install-Recommends "false";
APT::Install-Suggests "false";
CFG
    # No daemons may be started by package scripts inside the root.
    printf "#!/bin/sh\nexit 101\n" > "$TMP/usr/sbin/policy-rc.d"
    chmod 755 "$TMP/usr/sbin/policy-rc.d"
    cp -L /etc/resolv.conf "$TMP/etc/resolv.conf" 2>/dev/null || true

    # Package scripts expect /proc; mounted only inside this namespace.
    mount -t proc proc "$TMP/proc"
    chroot "$TMP" apt-get update -q
    chroot "$TMP" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends $PKGS
    chroot "$TMP" apt-get clean
    rm -rf "$TMP"/var/lib/apt/lists/* "$TMP"/var/cache/apt/*.bin
    umount "$TMP/proc"
    chroot "$TMP" gimp-console-3.0 --version
' >"$BUILD_LOG" 2>&1; then
    tail -n 30 "$BUILD_LOG" >&2
    die "building the GIMP 3 root failed (full log: $BUILD_LOG)"
fi

[ -x "$TMP/usr/bin/gimp-console-3.0" ] || die "build finished but gimp-console-3.0 is missing (log: $BUILD_LOG)"
chmod 755 "$TMP"          # mktemp -d made it 0700
chmod 1777 "$TMP/tmp"
date -u +%FT%TZ > "$TMP/.restora-gimp-root-ok"
# A leftover at $ROOT without the marker cannot come from this script (it only
# renames finished roots into place) but remove it rather than fail.
[ -e "$ROOT" ] && rm -rf --one-file-system "$ROOT"
mv -T "$TMP" "$ROOT"
TMP=
rm -f "$BUILD_LOG"
log "built $ROOT in $(( $(date +%s) - start )) s ($(du -sh --one-file-system "$ROOT" | cut -f1))"
echo "$ROOT"
