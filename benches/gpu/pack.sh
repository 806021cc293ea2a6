#!/usr/bin/env bash
# Prepares a run of benches/gpu/run.sh on a GPU host; run it here, in the root of the
# working tree that is then copied to the GPU host:
#
#   .carry/facerec.xz     the facerec binary, stripped and xz-compressed (~22 MB)
#   .carry/models.tar.xz  the four face-api ONNX files, xz-compressed (~9 MB: their weights
#                         are dequantised uint8, so they compress ~5x)
#   .carry/revision.txt   the commit the figures belong to
#   .gl/*.deb             the Vulkan/GL loader packages, for a GPU host without a Vulkan loader
#
# The tracked tree is ~68 MiB, mostly models/*.onnx (5 x ~22 MB). To keep the copy under
# 64 MiB, pack.sh also moves models/*.onnx out of the working tree (to $STASH) until the run
# is done; they reach the GPU host inside .carry/models.tar.xz. Then: copy the tree, with
# .carry/ and .gl/ (git ignores both), to the GPU host, run `bash benches/gpu/run.sh` in its
# root there, copy its gpu-out/ folder back, make the tables with
# `python3 benches/gpu/report.py <that folder>`, and put the models back:
#
#   bash benches/gpu/pack.sh --restore
#
# (benches/RESULTS.md, "GPU figures: how to produce them", gives the commands.)
#
# Binary: $FACEREC_BIN, default $CARGO_TARGET_DIR/debug/facerec
# (CARGO_TARGET_DIR default $HOME/.cache/facerec-target), built with the `gpu` feature
# (`cargo test --workspace --features gpu` or `cargo build --features gpu` makes it).
# Nothing is built here.
# usage: bash benches/gpu/pack.sh [--restore]
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
root="$(pwd)"
LIMIT=$((64 * 1024 * 1024))
STASH="${STASH:-$HOME/.cache/facerec-gpu-stash/$(printf %s "$root" | sha256sum | cut -c1-12)}"
BIN="${FACEREC_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/facerec-target}/debug/facerec}"
NETS=(face_recognition ssd_mobilenetv1 tiny_face_detector face_landmark_68)

restore() {
    shopt -s nullglob
    local moved=("$STASH"/*.onnx)
    if ((${#moved[@]} == 0)); then
        echo "pack: nothing stashed in $STASH"
    else
        for f in "${moved[@]}"; do
            local dest="models/$(basename "$f")"
            if [[ -f $dest ]] && cmp -s "$f" "$dest"; then rm "$f"; else mv -n "$f" "$dest"; fi
        done
        rmdir "$STASH" 2>/dev/null || true
    fi
    if git diff --quiet -- models/; then
        echo "pack: models/*.onnx restored, identical to git"
    else
        echo "pack: models/ differs from git after the restore; see git status" >&2
        return 1
    fi
}

# Bytes of the copy for the GPU host: tracked files present on disk, untracked files not
# ignored, and .carry/ and .gl/.
travel_bytes() {
    {
        git ls-files -z --cached --others --exclude-standard
        find .carry .gl -type f -print0 2>/dev/null
    } | { xargs -0 stat -c %s 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}'
}

if [[ "${1:-}" == "--restore" ]]; then
    restore
    exit 0
fi

for d in .carry .gl; do
    git check-ignore -q "$d/x" || { echo "pack: $d/ must be git-ignored" >&2; exit 1; }
done
mkdir -p .carry .gl

# 1. facerec, stripped and compressed (skipped when the packed copy is newer than the binary).
if [[ ! -x "$BIN" ]]; then
    echo "pack: no facerec binary at $BIN (set FACEREC_BIN or build it first)" >&2
    exit 1
fi
if [[ ! .carry/facerec.xz -nt "$BIN" ]]; then
    tmp="$(mktemp)"
    strip -o "$tmp" "$BIN"
    xz -9 -T0 -c "$tmp" > .carry/facerec.xz.part && mv .carry/facerec.xz.part .carry/facerec.xz
    rm -f "$tmp"
fi
file "$BIN" | grep -q x86-64 || echo "pack: WARNING: $BIN is not x86-64; run.sh expects an x86-64 GPU host" >&2

# 2. the four face-api models (from git's copy, so a stashed working tree still packs).
tmpd="$(mktemp -d)"
for n in "${NETS[@]}"; do git show "HEAD:models/$n.onnx" > "$tmpd/$n.onnx"; done
tar -C "$tmpd" -cf - "${NETS[@]/%/.onnx}" | xz -9 -T0 > .carry/models.tar.xz
rm -rf "$tmpd"

# The commit the figures belong to (run.sh logs it and report.py prints it).
echo "$(git rev-parse --short HEAD) $(git log -1 --format=%cs)$(git diff --quiet HEAD -- ':!models/*.onnx' || echo ' +local changes')" > .carry/revision.txt

# 3. Vulkan/GL loaders (Debian/Ubuntu amd64 packages), for a GPU host whose image has the
#    NVIDIA driver but no Vulkan loader: run.sh unpacks them there.
if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
    lists=/tmp/facerec-apt-amd64
    mkdir -p "$lists/partial"
    o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists"
       -oAPT::Sandbox::User=root)
    apt-get "${o[@]}" update >/dev/null
    (cd .gl && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi

# 4. Keep the copy under the limit: models/*.onnx go compressed in .carry instead.
if (($(travel_bytes) > LIMIT)); then
    mkdir -p "$STASH"
    for f in models/*.onnx; do mv -n "$f" "$STASH/"; done
    echo "pack: moved models/*.onnx to $STASH; after the GPU run: bash benches/gpu/pack.sh --restore"
fi
total="$(travel_bytes)"
ls -l .carry .gl | sed 's/^/pack: /'
awk -v t="$total" -v l="$LIMIT" 'BEGIN {printf "pack: the copy for the GPU host is %.1f MiB of at most %d MiB\n", t / 1048576, l / 1048576}'
if ((total > LIMIT)); then
    echo "pack: over the limit; ignore or remove more before copying" >&2
    exit 1
fi
cat <<'EOF'
pack: next, copy this tree with .carry/ and .gl/ to the GPU host, and there, in its root:
  bash benches/gpu/run.sh                     (writes gpu-out/)
pack: then, here, with that gpu-out/ copied back:
  python3 benches/gpu/report.py <gpu-out>   and   bash benches/gpu/pack.sh --restore
EOF
