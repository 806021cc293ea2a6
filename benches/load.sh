#!/usr/bin/env bash
# CPU throughput of the embedded default, with its peer, in one run:
#   1. `facerec up` (defaults: --backend auto) under the original workload — 1000 CSE546
#      crops, 100 concurrent clients, gallery of the ten distinct photos — through the load
#      harness (`facerec bench`), three passes, the median pass reported: images/s, latency
#      percentiles, answers and their correctness, and the server's CPU use (utime + stime
#      over the pass's wall time);
#   2. the peer, ageitgey's `face_recognition` (dlib), on the same 1000 images with the same
#      gallery, in as many processes as there are cores (benches/peers/face_recognition.py);
#   3. real photos (the face-api demo photos, 1920x1280, 3-5 faces each, N copies) through
#      `facerec identify`, faces found against the counts checked by eye;
#   4. each network through facerec (`facerec bench models`, backend ort and flex) and through
#      Python's onnxruntime with the same thread count (benches/ort_nets.py), the two
#      alternated net by net (facerec, Python, Python, facerec) and averaged.
# usage: bash benches/load.sh    (BIN= the binary, default the release build; WORK= a folder
#        to keep, default a temporary one; PHOTO_COPIES=10)
# Needs: python3 with onnxruntime (models/scripts/requirements.txt) and the peer's packages
# (see benches/peers/face_recognition.py). Prints markdown tables; raw JSON stays in WORK.
set -euo pipefail
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true
cd "$(dirname "$0")/.."
BIN="${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/facerec-target}/release/facerec}"
DATA=tests/data/cse546
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$WORK"
PHOTO_COPIES="${PHOTO_COPIES:-10}"
FACEAPI_DIR="${FACEAPI_DIR:-$(scripts/fetch-test-data.sh)}"
UP_PID=""
trap '[ -n "$UP_PID" ] && kill "$UP_PID" 2>/dev/null; true' EXIT
python3 -m zipfile -e "$DATA/face_images_1000.zip" "$WORK"
IMAGES="$WORK/face_images_1000"
cores=$(nproc)
# Mesa's Vulkan loader (probed by --backend auto) wants a runtime directory.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
# The processor, for the figures' heading: the same 2-core machine kind comes with other CPUs
# (onnxruntime's speed follows the vector units), so a figure names the CPU it was taken on.
cpu=$(python3 -c "import re; t = open('/proc/cpuinfo').read(); m = re.search(r'model name\s*: (.*)', t); f = re.search(r'^flags\s*: (.*)$', t, re.M); fl = f.group(1).split() if f else []; print((m.group(1) if m else 'unknown'), '+'.join(x for x in ('avx2', 'avx512f', 'avx512_vnni', 'amx_tile') if x in fl) or 'no avx2')")
echo "== $(date -u +%FT%TZ) on $cores cores ($cpu); binary $BIN" >&2

# The gallery: every distinct photo under its name (ten crops of eight people).
source benches/gallery.sh
cse546_gallery "$BIN" "$IMAGES" "$DATA/expected.csv" "$WORK"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "== 1. facerec up, original workload: 1000 images, 100 clients" >&2
rm -rf "$WORK/data" && mkdir -p "$WORK/data/out/gallery"
cp "$WORK/gallery.frg" "$WORK/data/out/gallery/gallery.frg"
FACEREC_LOG=info "$BIN" --log-json up --listen 127.0.0.1:0 --data "$WORK/data" 2> "$WORK/up.log" &
UP_PID=$!
ADDR=""
for _ in $(seq 600); do
  ADDR=$(sed -n 's/^facerec listening on http:\/\///p' "$WORK/up.log")
  [ -n "$ADDR" ] && break
  sleep 0.2
done
[ -n "$ADDR" ] || { cat "$WORK/up.log" >&2; exit 1; }
# Warm-up (not measured): one pass of the ten distinct photos.
"$BIN" bench --url "http://$ADDR" --images "$WORK/people" -c 10 -n 10 >/dev/null 2>&1 || true
# CPU over each pass: facerec's (its process ticks), the load generator's (its rusage) and
# the machine's idle time (/proc/stat), each in cores. facerec's and the idle time are given
# over the load itself (the harness's wall time, first request to last answer): the pass
# also holds the harness's start (Python's and its own, reading the 1000 images) and exit,
# tenths of a second with the server idle and waiting. That idle time is taken out as the
# cores' whole time outside the load, which undercounts the idle time within it by at most
# the harness's own start-up CPU. facerec's over the whole pass is printed too.
idle() { awk '/^cpu /{print $5 + $6}' /proc/stat; }
# Three passes of the 1000 images against the same server, one after the other; each figure
# is the median pass, all three printed (one pass moves by +-15% on a noisy machine, and a
# slow spell of the machine lengthens every request in flight, p99 the most).
for pass in 1 2 3; do
  t0=$(ticks "$UP_PID"); i0=$(idle); w0=$(date +%s.%N)
  python3 -c "import resource, subprocess, sys
rc = subprocess.run(sys.argv[2:]).returncode
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], 'w').write(f'{r.ru_utime + r.ru_stime}\n')
sys.exit(rc)" "$WORK/bench$pass.cpu" "$BIN" bench --url "http://$ADDR" --images "$IMAGES" \
    --expected "$DATA/expected.csv" -c 100 --json "$WORK/up$pass.json" >&2
  t1=$(ticks "$UP_PID"); i1=$(idle); w1=$(date +%s.%N)
  python3 -c "import json, os, sys
hz = os.sysconf('SC_CLK_TCK'); t0, t1, i0, i1 = map(int, sys.argv[1:5]); wall = float(sys.argv[6]) - float(sys.argv[5])
bench = float(open(sys.argv[7]).read())
load = min(json.load(open(sys.argv[8]))['wall_seconds'], wall)
idle = max(0.0, (i1 - i0) / hz - os.cpu_count() * (wall - load))
print(round((t1 - t0) / hz / load, 2), round(bench / wall, 2), round(idle / load, 2), round((t1 - t0) / hz / wall, 2))" \
    "$t0" "$t1" "$i0" "$i1" "$w0" "$w1" "$WORK/bench$pass.cpu" "$WORK/up$pass.json" > "$WORK/up$pass.cpu"
done
python3 -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())" \
  "http://$ADDR/metrics" > "$WORK/up.metrics"
backend=$(python3 -c "import json, sys
for l in open(sys.argv[1]):
    if l.startswith('{') and json.loads(l).get('fields', {}).get('message') == 'compute backend':
        f = json.loads(l)['fields']; print(f['backend'], '-', f['adapter']); break" "$WORK/up.log")
kill "$UP_PID"; wait "$UP_PID" 2>/dev/null || true; UP_PID=""

echo "== 2. peer: face_recognition (dlib), $cores processes, same images and gallery" >&2
python3 benches/peers/face_recognition.py --gallery "$WORK/people" --expected "$DATA/expected.csv" \
  --procs "$cores" "$IMAGES"/*.jpg > "$WORK/peer.json"
cat "$WORK/peer.json" >&2

echo "== 3. real photos: face-api demo photos x $PHOTO_COPIES through facerec identify" >&2
rm -rf "$WORK/photos" && mkdir -p "$WORK/photos"
for c in $(seq "$PHOTO_COPIES"); do
  for i in 1 2 3 4 5 6; do cp "$FACEAPI_DIR/demo/sample$i.jpg" "$WORK/photos/s${i}_$c.jpg"; done
done
# Start-up (model loading, adapter probing) is not throughput: time the six photos alone
# and then all the copies, and count the difference; three such pairs, the median taken
# (one pair moves by +-15% on a noisy machine).
rm -rf "$WORK/photos1" && mkdir -p "$WORK/photos1" && cp "$WORK/photos"/s?_1.jpg "$WORK/photos1/"
"$BIN" identify --gallery "$WORK/gallery.frg" --json "$WORK/photos1"/*.jpg >/dev/null  # warm caches
: > "$WORK/photos.time"
for _ in 1 2 3; do
  p0=$(date +%s.%N)
  "$BIN" identify --gallery "$WORK/gallery.frg" --json "$WORK/photos1"/*.jpg >/dev/null
  p1=$(date +%s.%N)
  "$BIN" identify --gallery "$WORK/gallery.frg" --json "$WORK/photos"/*.jpg > "$WORK/photos.ndjson"
  p2=$(date +%s.%N)
  echo "$p0 $p1 $p2" >> "$WORK/photos.time"
done

echo "== 4. each network: facerec (ort, flex) and Python onnxruntime, $cores threads" >&2
# facerec's onnxruntime backend and Python's onnxruntime are timed net by net, in the order
# facerec, Python, Python, facerec (each figure the mean of its two), so that a drift of the
# machine's speed over the minutes of the run falls on both alike.
# Both sides report the median call (facerec's `median_ms`, Python's `seconds_per_batch`);
# SSD gets 4 s a point, as a call at batch 16 takes most of a second here.
secs() { [ "$1" = ssd ] && echo 4 || echo 2; }
ort_net() { "$BIN" bench models --backend ort --nets "$1" --batches 1,16 --seconds "$(secs "$1")" --json "$2" >/dev/null; }
py_net() { python3 benches/ort_nets.py --nets "$1" --threads "$cores" --batches 1,16 --seconds "$(secs "$1")" > "$2"; }
for net in ssd tiny landmarks recognition; do
  ort_net "$net" "$WORK/nets-ort-$net-a.json"
  py_net "$net" "$WORK/nets-py-$net-a.json"
  py_net "$net" "$WORK/nets-py-$net-b.json"
  ort_net "$net" "$WORK/nets-ort-$net-b.json"
done
"$BIN" bench models --backend cpu --nets ssd,tiny,landmarks,recognition --batches 1,16 \
  --seconds 2 --json "$WORK/nets-flex.json" >/dev/null

python3 - "$WORK" "$backend" "$cpu" "$cores" <<'PY'
import json, sys
work, backend, processor, cores = sys.argv[1:5]
print(f"machine: {cores} cores, {processor}\n")
passes = [json.load(open(f"{work}/up{p}.json")) for p in (1, 2, 3)]
cpus = [tuple(map(float, open(f"{work}/up{p}.cpu").read().split())) for p in (1, 2, 3)]
peer = json.loads(open(f"{work}/peer.json").read())
median = lambda xs: (lambda s: s[len(s) // 2])(sorted(xs))  # noqa: E731
listed = lambda xs, f: ", ".join(f.format(x) for x in xs)  # noqa: E731
rates = [p["ok_throughput"] for p in passes]
rate = median(rates)
fair = [p["latency_ms"]["p99"] / p["latency_ms"]["p50"] for p in passes]
print(f"backend of `facerec up`: {backend}\n")
print("| figure | facerec | peer / reference | ratio |")
print("| --- | ---: | ---: | ---: |")
statuses = {}
for p in passes:
    for k, v in p["statuses"].items():
        statuses[k] = statuses.get(k, 0) + v
errs = ", ".join(f"{k}: {v}" for k, v in statuses.items() if k != "200") or "none"
correct = sum(p["correct"] for p in passes)
requests = sum(p["requests"] for p in passes)
print(f"| original workload through `facerec up` (1000 crops, c=100; median of 3 passes) | {rate:.1f} img/s "
      f"({listed(rates, '{:.1f}')}), {correct}/{requests} correct, errors {errs} | | |")
print(f"| the same images: facerec `up` vs `face_recognition` ({peer['procs']} processes) | "
      f"{rate:.1f} img/s | {peer['images_per_s']:.1f} img/s, {peer['correct']}/{peer['images']} correct, "
      f"{peer['whole_frame']} whole-frame | {rate / peer['images_per_s']:.2f}x |")
lines = [json.loads(l) for l in open(f"{work}/photos.ndjson") if l.strip()]
# (all photos) - (six alone): the copies beyond the first six, without start-up; the median
# of the three pairs.
rates = sorted((len(lines) - 6) / ((t2 - t1) - (t1 - t0))
               for t0, t1, t2 in (map(float, l.split()) for l in open(f"{work}/photos.time") if l.strip()))
photo_rate = rates[len(rates) // 2]
want = {"s1": 3, "s2": 3, "s3": 3, "s4": 4, "s5": 5, "s6": 4}
found = sum(len(l.get("faces", [])) for l in lines)
right = sum(len(l.get("faces", [])) == want[l["image"].rsplit("/", 1)[1].split("_")[0]] for l in lines)
print(f"| real photos (1920x1280, 3-5 faces) through `facerec identify` | {photo_rate:.1f} img/s "
      f"(median of {', '.join(f'{r:.1f}' for r in rates)}), "
      f"{found} faces, {right}/{len(lines)} photos with every face | 22 faces per 6 photos (by eye) | |")
cpu, bench_cpu, idle_cpu, pass_cpu = (median(c[i] for c in cpus) for i in range(4))
print(f"| CPU use of the busy `facerec up` (median pass, over the load) | {cpu:.2f} cores "
      f"({listed((c[0] for c in cpus), '{:.2f}')}; over the whole pass, with the load generator's start "
      f"and exit, {pass_cpu:.2f}; the load generator {bench_cpu:.2f}, idle {idle_cpu:.2f}, of {cores}) | | |")
lat = passes[fair.index(median(fair))]["latency_ms"]
print(f"| fairness under 100 clients: p99 / p50 (median pass) | {median(fair):.2f} ({listed(fair, '{:.2f}')}; "
      f"that pass: p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms) | | |")
print()
# Where the engine's time went (the worker's per-stage histograms, whole run incl. warm-up).
stages = {}
for line in open(f"{work}/up.metrics"):
    if line.startswith("facerec_engine_stage_duration_seconds_sum{"):
        stage = line.split('stage="', 1)[1].split('"', 1)[0]
        stages[stage] = float(line.rsplit(" ", 1)[1])
total = sum(stages.values())
print("| stage (in `facerec up`) | seconds | share |")
print("| --- | ---: | ---: |")
for stage, sec in sorted(stages.items(), key=lambda kv: -kv[1]):
    print(f"| {stage} | {sec:.2f} | {100 * sec / total:.0f}% |")
print()
import glob
rows = lambda f: {(r["net"], r["batch"]): r["batch"] * 1000 / r["median_ms"] for r in json.load(open(f))["results"]}  # noqa: E731
py_rows = lambda f: {(r["net"], r["batch"]): r["items_per_s"] for r in map(json.loads, open(f)) if r}  # noqa: E731


def mean_of(pattern, read):
    runs = [read(f) for f in sorted(glob.glob(f"{work}/{pattern}"))]
    keys = set().union(*runs) if runs else set()
    return {k: sum(r[k] for r in runs if k in r) / sum(k in r for r in runs) for k in keys}


ort, flex = mean_of("nets-ort-*.json", rows), rows(f"{work}/nets-flex.json")
py = mean_of("nets-py-*.json", py_rows)
print("| net | batch | facerec ort (items/s) | facerec flex (items/s) | Python onnxruntime (items/s) | ort / Python | flex / Python |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for key in sorted(py):
    if key in ort and key in flex:
        print(f"| {key[0]} | {key[1]} | {ort[key]:.1f} | {flex[key]:.1f} | {py[key]:.1f} | "
              f"{ort[key] / py[key]:.2f}x | {flex[key] / py[key]:.2f}x |")
PY
