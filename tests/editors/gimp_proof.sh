#!/usr/bin/env bash
# End-to-end proof that real GIMP 3 runs Python headless in the trixie root:
# GEGL pixel I/O, selection bounds, HTTP to a server on the host's 127.0.0.1,
# and a user Gimp.PlugIn procedure called with arguments from batch Python.
# Usage: tests/editors/gimp_proof.sh   (builds the root if needed; root only)
# Prints the proof JSON and "gimp proof: OK"; exits non-zero on any failure.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3

ROOT=$("$HERE/gimp_root.sh" | tail -n 1)

work=$(mktemp -d /tmp/gimp-proof.XXXXXX)        # host side
home_in=$(mktemp -d "$ROOT/tmp/gimp-proof-home.XXXXXX"); home_in=${home_in#"$ROOT"}
srv_pid=
cleanup() {
    if [ -n "$srv_pid" ]; then kill "$srv_pid" 2>/dev/null || true; fi
    rm -rf "$work"
    rm -rf --one-file-system "${ROOT:?}$home_in"
}
trap cleanup EXIT

# 1. A tiny HTTP server on the HOST's loopback, on a free port.
echo "hello-from-host" > "$work/ping.txt"
( exec "$PY" -c '
import functools, http.server, sys
h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), h)
open(sys.argv[2], "w").write(str(s.server_address[1]))
s.serve_forever()' "$work" "$work/port.tmp" ) >"$work/server.log" 2>&1 &
srv_pid=$!
for _ in $(seq 100); do [ -s "$work/port.tmp" ] && break; sleep 0.05; done
port=$(cat "$work/port.tmp")

# 2. Install the test plug-in into the GIMP HOME inside the root:
#    $HOME/.config/GIMP/3.0/plug-ins/NAME/NAME, executable.
pdir="$ROOT$home_in/.config/GIMP/3.0/plug-ins/restora-proof"
mkdir -p "$pdir"
install -m 755 "$HERE/gimp_plugin/restora-proof.py" "$pdir/restora-proof"

# 3. Run the batch script (fed on stdin: `-b -`).
GIMP_HOME=$home_in "$HERE/gimp_run.sh" "$ROOT" \
    env RESTORA_PROOF_URL="http://127.0.0.1:$port" RESTORA_PROOF_OUT="$home_in/proof.json" \
    gimp-console-3.0 -i -n --batch-interpreter python-fu-eval -b - --quit \
    < "$HERE/gimp_proof_batch.py" > "$work/gimp.out" 2> "$work/gimp.err" || {
        rc=$?; cat "$work/gimp.out" "$work/gimp.err" >&2
        echo "gimp_proof.sh: GIMP batch failed (exit $rc)" >&2; exit 1; }

cat "$ROOT$home_in/proof.json"; echo
"$PY" - "$ROOT$home_in/proof.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["gimp_version"].startswith("3."), r["gimp_version"]
assert r["layer_format"] == "R'G'B'A u8", r["layer_format"]
assert r["pixel_roundtrip_ok"], "GEGL pixel round trip"
assert r["selection_bounds"] == [True, True, 10, 8, 30, 24], r["selection_bounds"]
assert r["http_from_batch"] == "hello-from-host", r.get("http_from_batch")
assert r["plugin_found"], "plug-in procedure not found"
assert r["plugin_status"] == "success", r
s = r["plugin_summary"]
assert (s["label"], s["scale"], s["strength"]) == ("upscaled", 4, 0.75), s
assert s["selection"] == [10, 8, 30, 24] and s["n_pixels_read"] == 320, s
assert s["http"].strip() == "hello-from-host", s
assert [l["name"] for l in r["layers"]] == ["upscaled x4", "Background"], r["layers"]
assert r["layers"][0]["bounds"] == [10, 8, 20, 16], r["layers"]
assert r["plugin_pixels_ok"], "plug-in output pixels"
PY
echo "gimp proof: OK"
