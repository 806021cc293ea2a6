#!/usr/bin/env bash
# Load figures for the web tier, with the harness (`facerec bench`) against `facerec up` on
# this machine, and the offline engine (`facerec identify`) on the same images as the peer.
#   bash benches/load.sh            (uses $CARGO_TARGET_DIR/debug/facerec; BIN= to override)
# Prints markdown tables; the server's peak memory (VmHWM) is read from /proc.
set -euo pipefail
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true
cd "$(dirname "$0")/.."
BIN="${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/facerec-target}/debug/facerec}"
SHARED=../shared/datasets/cse546
WORK="$(mktemp -d)"
trap 'kill "${UP_PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
python3 -m zipfile -e "$SHARED/face_images_1000.zip" "$WORK"
IMAGES="$WORK/face_images_1000"

# The gallery: every distinct photo under its name (ten crops of eight people).
python3 - "$IMAGES" "$SHARED/expected.csv" "$WORK/people" <<'PY'
import csv, hashlib, os, shutil, sys
images, expected, people = sys.argv[1:]
seen = set()
for stem, name in list(csv.reader(open(expected)))[1:]:
    h = hashlib.sha256(open(f"{images}/{stem}.jpg", "rb").read()).hexdigest()
    if h in seen:
        continue
    seen.add(h)
    os.makedirs(f"{people}/{name}", exist_ok=True)
    shutil.copy(f"{images}/{stem}.jpg", f"{people}/{name}/{stem}.jpg")
PY

echo "== peer: offline engine, same binary, same 1000 images"
"$BIN" enroll --backend cpu --gallery "$WORK/gallery.frg" --dir "$WORK/people" >/dev/null
t0=$(date +%s.%N)
"$BIN" identify --backend cpu --gallery "$WORK/gallery.frg" "$IMAGES"/*.jpg > "$WORK/offline.txt"
t1=$(date +%s.%N)
python3 -c "import sys; n=1000; s=float(sys.argv[2])-float(sys.argv[1]); print(f'offline identify: {n} images in {s:.1f} s = {n/s:.1f} img/s')" "$t0" "$t1"

start_up() {
  # The gallery enrolled above, where `facerec up` keeps it.
  mkdir -p "$WORK/data-$1/out/gallery"
  cp "$WORK/gallery.frg" "$WORK/data-$1/out/gallery/gallery.frg"
  FACEREC_MAX_IN_FLIGHT="$1" REQUEST_TIMEOUT=600 "$BIN" up --backend cpu --listen 127.0.0.1:0 \
    --data "$WORK/data-$1" --workers 1 --max-workers 2 2> "$WORK/up-$1.log" &
  UP_PID=$!
  for _ in $(seq 600); do
    ADDR=$(sed -n 's/^facerec listening on http:\/\///p' "$WORK/up-$1.log")
    [ -n "$ADDR" ] && break
    sleep 0.2
  done
}
hwm() { awk '/VmHWM/ {printf "%.0f MiB\n", $2/1024}' "/proc/$UP_PID/status"; }
stop_up() { kill "$UP_PID"; wait "$UP_PID" 2>/dev/null || true; }

start_up 512
echo "== /health, 64 clients (the web tier alone)"
"$BIN" bench --url "http://$ADDR" --route health -n 20000 -c 64
echo "== / (original workload): 1000 images, 100 clients"
"$BIN" bench --url "http://$ADDR" --images "$IMAGES" --expected "$SHARED/expected.csv" -c 100
echo "peak server memory: $(hwm)"
stop_up

start_up 100
echo "== overload: 1000 clients against FACEREC_MAX_IN_FLIGHT=100 (10x), 3000 requests"
"$BIN" bench --url "http://$ADDR" --images "$IMAGES" --expected "$SHARED/expected.csv" -c 1000 -n 3000 --timeout 600
echo "peak server memory: $(hwm)"
stop_up
