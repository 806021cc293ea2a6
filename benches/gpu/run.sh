#!/usr/bin/env bash
# The GPU figures in one run on a GPU host: facerec (Burn wgpu) and the eager PyTorch peer
# (benches/torch/peer.py) on the same GPU, same weights, batches 1/16/64/256.
#
# Runs on the GPU host, in the root of a copy of the working tree that
# `bash benches/gpu/pack.sh` prepared (it adds .carry/ and .gl/; the steps are in
# benches/RESULTS.md, "GPU figures: how to produce them"):
#   bash benches/gpu/run.sh
# The host needs the NVIDIA driver with its Vulkan ICD, nvidia-smi, and python3 with torch,
# onnx, onnxruntime, numpy and pillow; where it has no Vulkan loader, run it as root (the
# packed loader packages are unpacked into /).
# Writes under $OUT (default ./gpu-out): run.log (everything), env.json, torch-fp32.json,
# torch-fp32-upload.json, torch-fp16.json, facerec-wgpu.json, facerec-wgpu-host-prep.json,
# report.md (report.py's tables). Copy that folder back to the build machine and run
# report.py on it there.
# Each step's failure is logged and the next steps still run; the exit status is 1 if any
# step failed. Steps share a budget of $BUDGET seconds (default 540, about 9 minutes), and
# each has a cap of its own.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-out}"
BUDGET="${BUDGET:-540}"
BATCHES="${BATCHES:-1,16,64,256}"
FACEREC=/tmp/facerec
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
tee_pid=$!
export PYTHONUNBUFFERED=1
failed=()

# step NAME CAP_SECONDS CMD...: run CMD with at most CAP seconds (less if the budget is short).
step() {
    local name=$1 cap=$2 left=$((BUDGET - SECONDS))
    shift 2
    if ((left < 10)); then
        echo "== $name: skipped, ${left}s of the budget left"
        failed+=("$name (skipped)")
        return
    fi
    ((cap > left)) && cap=$left
    echo "== $name [$(date -u +%T), ${SECONDS}s in, up to ${cap}s]: $*"
    local rc
    if [[ "$(type -t "$1")" == function ]]; then
        "$@"  # short set-up steps run in this shell, untimed
    else
        timeout -k 5 "$cap" "$@"
    fi
    rc=$?
    if ((rc != 0)); then
        echo "== $name: FAILED (exit $rc$( ((rc == 124)) && echo ', timed out'))"
        failed+=("$name (exit $rc)")
    fi
}

setup() {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    date -u
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
                "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available())'
    cat .carry/revision.txt 2>/dev/null
    # Vulkan loader: unpack the packed Debian packages (.gl/) if none is installed.
    if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    ldconfig -p | grep libvulkan
    # facerec and the ONNX files (pack.sh keeps models/*.onnx out of the copied tree).
    # (Python's lzma/tarfile: no dependence on the image having xz.)
    python3 - "$FACEREC" <<'PY'
import lzma, os, shutil, sys, tarfile
with lzma.open(".carry/facerec.xz") as src, open(sys.argv[1], "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[1], 0o755)
if not os.path.exists("models/face_recognition.onnx"):
    with tarfile.open(".carry/models.tar.xz") as t:
        t.extractall("models", filter="data")
PY
    ls -l models/*.onnx "$FACEREC"
}

# The driver's Vulkan ICD where the driver's files are under /usr/local/nvidia (where some
# container runtimes mount the NVIDIA driver) and the loader finds none in the standard places.
vulkan_env() {
    local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    if [[ -z "${VK_DRIVER_FILES:-}" && -f $icd ]] &&
        ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
        export VK_DRIVER_FILES=$icd
        export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
        echo "VK_DRIVER_FILES=$VK_DRIVER_FILES"
    fi
}

env_json() {
    python3 - "$OUT/env.json" <<'PY'
import datetime, json, subprocess, sys
import torch
try:
    q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                       capture_output=True, text=True).stdout.strip().split(", ")
except OSError:
    q = []
try:
    revision = open(".carry/revision.txt").read().strip()
except OSError:
    revision = None
json.dump({"gpu": q[0] if q else None, "driver": q[1] if len(q) > 1 else None,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
           "revision": revision}, open(sys.argv[1], "w"), indent=1)
PY
}

step setup 90 setup
vulkan_env
step env 30 env_json
step "torch parity (cuda)" 90 python3 benches/torch/peer.py --check
step "torch fp32" 150 python3 benches/torch/peer.py --bench --batches "$BATCHES" --seconds 1 \
    --json "$OUT/torch-fp32.json"
step "torch fp32, input upload timed" 120 python3 benches/torch/peer.py --bench --upload \
    --batches "$BATCHES" --seconds 1 --json "$OUT/torch-fp32-upload.json"
# 1 s per point where this facerec build has --seconds (its default is 3 s).
seconds=()
"$FACEREC" bench models --help 2>/dev/null | grep -q -- --seconds && seconds=(--seconds 1)
step "facerec wgpu" 300 "$FACEREC" bench models --backend wgpu --batches "$BATCHES" \
    --nets recognition,ssd,tiny,landmarks,pipeline,search --gallery-faces 1000000 \
    "${seconds[@]}" --json "$OUT/facerec-wgpu.json"
step "facerec wgpu pipeline, CPU pre-processing" 60 "$FACEREC" bench models --backend wgpu \
    --batches "$BATCHES" --nets pipeline --device-prep false "${seconds[@]}" \
    --json "$OUT/facerec-wgpu-host-prep.json"
step "torch fp16" 120 python3 benches/torch/peer.py --bench --fp16 --batches "$BATCHES" --seconds 1 \
    --json "$OUT/torch-fp16.json"
step "torch peer tests (cpu)" 60 python3 benches/torch/test_peer.py
# The tables, whatever the budget left (report.py takes well under a second).
timeout 20 python3 benches/gpu/report.py "$OUT" > "$OUT/report.md" || failed+=("report")
cat "$OUT/report.md" 2>/dev/null
echo "== done in ${SECONDS}s; failed: ${failed[*]:-none}"
status=$((${#failed[@]} == 0 ? 0 : 1))
exec >&- 2>&-
wait "$tee_pid" 2>/dev/null  # the log is complete before the command returns
exit "$status"
