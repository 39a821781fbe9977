#!/usr/bin/env bash
# End-to-end proof that real Krita runs Python headless with pixel I/O.
# Usage: tests/editors/krita_proof.sh   (installs Krita if needed)
# Prints the proof JSON and "krita proof: OK"; exits non-zero on any failure.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

out=$(mktemp /tmp/krita-proof.XXXXXX.json)
trap 'rm -f "$out"' EXIT

"$HERE/krita_run.sh" "$HERE/krita_proof.py" main "$out" >/dev/null
cat "$out"

/usr/bin/python3 - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
names = [l["name"] for l in r["layers"] if l["type"] == "paintlayer"]
assert r["document"] == [64, 48, "RGBA", "U8"], r["document"]
assert names == ["Background", "Restora result"], names
bounds = {l["name"]: l["bounds"] for l in r["layers"]}
assert bounds["Background"] == [0, 0, 64, 48], bounds
assert bounds["Restora result"] == [10, 8, 20, 16], bounds
assert r["base_roundtrip_ok"] and r["top_roundtrip_ok"], r
assert r["red_pixel_native_bytes"] == [0, 0, 255, 255], "expected BGRA byte order"
assert r["projection_inside_patch_rgba"] == [255, 0, 0, 255], r
assert r["projection_at_0_0_rgba"] == [0, 0, 200, 255], r
assert r["selection"] == [4, 6, 30, 20], r["selection"]
PY
echo "krita proof: OK"
