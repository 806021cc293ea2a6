#!/usr/bin/env bash
# The cost of keeping every recognised face (`--index-faces`, the default) on the original
# workload: two `facerec up` on one machine, one recording every face in its face store and
# one with `--index-faces false`, each given the same gallery (the ten distinct CSE546
# photos) and the same 1000 crops from 100 concurrent clients (`facerec bench`). The two
# are measured alternately (off, on, on, off, off, on: one server at a time, the other
# stopped), and the median of each is compared. At the end, the face store of the
# indexing one holds one seen face per answered image.
# usage: bash benches/index_faces.sh    (BIN= the binary, default the release build; WORK=
#        a folder to keep, default a temporary one)
set -euo pipefail
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true
cd "$(dirname "$0")/.."
BIN="${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/facerec-target}/release/facerec}"
DATA=tests/data/cse546
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$WORK"
UP_PID=""
trap '[ -n "$UP_PID" ] && kill "$UP_PID" 2>/dev/null; true' EXIT
python3 -m zipfile -e "$DATA/face_images_1000.zip" "$WORK"
IMAGES="$WORK/face_images_1000"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
echo "== $(date -u +%FT%TZ) on $(nproc) cores; binary $BIN" >&2

source benches/gallery.sh
cse546_gallery "$BIN" "$IMAGES" "$DATA/expected.csv" "$WORK"
for mode in on off; do
  rm -rf "$WORK/data-$mode" && mkdir -p "$WORK/data-$mode/out/gallery"
  cp "$WORK/gallery.frg" "$WORK/data-$mode/out/gallery/gallery.frg"
done

# One pass: start the server of `mode` on its data, warm it up, load it, stop it.
pass() {
  local mode=$1 n=$2
  FACEREC_LOG=info "$BIN" --log-json up --listen 127.0.0.1:0 --data "$WORK/data-$mode" \
    --index-faces "$([ "$mode" = on ] && echo true || echo false)" 2> "$WORK/up-$mode-$n.log" &
  UP_PID=$!
  local addr=""
  for _ in $(seq 600); do
    addr=$(sed -n 's/^facerec listening on http:\/\///p' "$WORK/up-$mode-$n.log")
    [ -n "$addr" ] && break
    sleep 0.2
  done
  [ -n "$addr" ] || { cat "$WORK/up-$mode-$n.log" >&2; exit 1; }
  "$BIN" bench --url "http://$addr" --images "$WORK/people" -c 10 -n 10 >/dev/null 2>&1 || true
  "$BIN" bench --url "http://$addr" --images "$IMAGES" --expected "$DATA/expected.csv" -c 100 \
    --json "$WORK/$mode-$n.json" >&2
  kill -INT "$UP_PID"; wait "$UP_PID" || true; UP_PID=""
}
n=0
for mode in off on on off off on; do
  n=$((n + 1))
  echo "== pass $n: --index-faces $mode" >&2
  pass "$mode" "$n"
done

python3 - "$WORK" <<'PY'
import glob, json, sqlite3, statistics, sys
work = sys.argv[1]
def runs(mode):
    out = []
    for f in sorted(glob.glob(f"{work}/{mode}-*.json")):
        r = json.load(open(f))
        out.append((r["throughput"], r["correct"], r["requests"]))
    return out
on, off = runs("on"), runs("off")
m_on = statistics.median(r[0] for r in on)
m_off = statistics.median(r[0] for r in off)
seen = sqlite3.connect(f"{work}/data-on/faces.db").execute("SELECT COUNT(*) FROM facerec_seen_faces").fetchone()[0]
unseen = sqlite3.connect(f"{work}/data-off/faces.db").execute("SELECT COUNT(*) FROM facerec_seen_faces").fetchone()[0]
print("| `facerec up`, original workload (1000 crops, c=100) | img/s, each pass | median |")
print("| --- | --- | ---: |")
print(f"| every face recorded (`--index-faces true`, the default) | {', '.join(f'{r[0]:.1f}' for r in on)} | {m_on:.1f} |")
print(f"| nothing recorded (`--index-faces false`) | {', '.join(f'{r[0]:.1f}' for r in off)} | {m_off:.1f} |")
print(f"\nratio {m_on / m_off:.2f}x; answers correct: {[r[1] for r in on + off]} of {[r[2] for r in on + off]}; "
      f"seen faces stored: {seen} with indexing (its passes answered {sum(r[1] for r in on)} images, one face each; "
      f"a warm-up adds its own), {unseen} without")
PY
