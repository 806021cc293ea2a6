#!/usr/bin/env bash
# Embedding throughput, Burn (flex CPU backend) vs onnxruntime on the same ONNX file and
# the same chips, in one run. Prints a markdown table for benches/RESULTS.md.
# usage: bash benches/embed_vs_ort.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/facerec-target}"
# The dev profile builds dependencies (Burn, its kernels) at opt-level 3, as release does.
cargo bench --profile dev --workspace --bench embed -- --noplot >&2
ort_json="$(python3 benches/ort_nets.py --nets recognition --threads 1,"$(nproc)")"
python3 - "$CARGO_TARGET_DIR" "$ort_json" <<'PY'
import json, os, sys
target, ort_lines = sys.argv[1], sys.argv[2]
ort = [json.loads(l) for l in ort_lines.splitlines() if l.strip()]
ncpu = os.cpu_count()
print(f"| batch | Burn flex (img/s) | onnxruntime 1 thread (img/s) | onnxruntime {ncpu} threads (img/s) | Burn / ort-1t | Burn / ort-{ncpu}t |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
for b in (1, 16, 64):
    est = json.load(open(os.path.join(target, "criterion", "embed_cpu", str(b), "new", "estimates.json")))
    burn = b / (est["median"]["point_estimate"] / 1e9)
    o1 = next(o["items_per_s"] for o in ort if o["batch"] == b and o["threads"] == 1)
    on = next(o["items_per_s"] for o in ort if o["batch"] == b and o["threads"] == ncpu)
    print(f"| {b} | {burn:.1f} | {o1:.1f} | {on:.1f} | {burn/o1:.2f}x | {burn/on:.2f}x |")
PY
