#!/usr/bin/env bash
# Fetches the test data that comes from package registries (never from a model hub), into
# ${FACEREC_TESTDATA:-~/.cache/facerec/testdata}, and prints where it is:
#   scripts/fetch-test-data.sh [face-api]  the npm package @vladmandic/face-api 1.7.15, whose
#       demo/ photos the real-photo tests use and whose model/ weights models/scripts/convert.py
#       converts; prints the unpacked package directory.
#   scripts/fetch-test-data.sh dlib        the PyPI sdist face_recognition_models 0.3.0 (dlib's
#       float recognition weights, for convert.py --dlib), pinned by sha256; prints its path.
#   scripts/fetch-test-data.sh eval        the real faces of the accuracy evaluation
#       (tests/data/eval/faces.csv), gathered into one tree and printed: dlib 19.5.0's PyPI
#       sdist (its example data: examples/johns/, five people x 11 tight 150 px crops, and
#       examples/faces/, photos of groups), face_recognition 1.3.0's PyPI sdist
#       (tests/test_images/), both pinned by sha256; face-api's demo photos (above) and the ten
#       distinct CSE546 crops (tests/data/cse546).
set -euo pipefail
root="${FACEREC_TESTDATA:-$HOME/.cache/facerec/testdata}"
case "${1:-face-api}" in
  face-api)
    version=1.7.15
    dest="$root/face-api-$version"
    if [ ! -f "$dest/package/demo/sample1.jpg" ]; then
      mkdir -p "$dest"
      (cd "$dest" && npm pack --silent "@vladmandic/face-api@$version" >/dev/null && tar xzf vladmandic-face-api-$version.tgz && rm -f vladmandic-face-api-$version.tgz)
    fi
    echo "$dest/package"
    ;;
  dlib)
    sdist=face_recognition_models-0.3.0.tar.gz
    sha256=b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf
    dest="$root/pypi"
    if ! (cd "$dest" 2>/dev/null && echo "$sha256  $sdist" | sha256sum --check --status); then
      mkdir -p "$dest"
      req="$(mktemp)"
      echo "face_recognition_models==0.3.0 --hash=sha256:$sha256" >"$req"
      python3 -m pip download --quiet --no-deps --require-hashes -r "$req" -d "$dest" >&2
      rm -f "$req"
      (cd "$dest" && echo "$sha256  $sdist" | sha256sum --check --status)
    fi
    echo "$dest/$sdist"
    ;;
  eval)
    dest="$root/eval-1"
    if [ ! -f "$dest/.complete" ]; then
      here="$(cd "$(dirname "$0")/.." && pwd)"
      faceapi="$("$0" face-api)"
      pypi="$root/pypi"
      mkdir -p "$pypi"
      req="$(mktemp)"
      cat >"$req" <<'REQ'
dlib==19.5.0 --hash=sha256:b5896c7a51992441eac605395e07f2b31548376cadc1f392d93f69c821e6552e
face_recognition==1.3.0 --hash=sha256:5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec
REQ
      python3 -m pip download --quiet --no-deps --no-binary :all: --require-hashes -r "$req" -d "$pypi" >&2
      rm -f "$req"
      rm -rf "$dest" && mkdir -p "$dest/cse546" "$dest/face-api"
      ex=dlib-19.5.0/docs/docs/cache/examples
      tar xzf "$pypi/dlib-19.5.0.tar.gz" -C "$dest" "$ex/johns" "$ex/faces"
      mv "$dest/$ex/johns" "$dest/johns" && mv "$dest/$ex/faces" "$dest/photos" && rm -rf "$dest/dlib-19.5.0"
      tar xzf "$pypi/face_recognition-1.3.0.tar.gz" -C "$dest" face_recognition-1.3.0/tests/test_images
      mv "$dest/face_recognition-1.3.0/tests/test_images" "$dest/face_recognition" && rm -rf "$dest/face_recognition-1.3.0"
      cp "$faceapi"/demo/sample*.jpg "$dest/face-api/"
      python3 - "$here/tests/data/cse546/face_images_1000.zip" "$dest/cse546" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for i in range(10):
        name = f"face_images_1000/test_{i:03d}.jpg"
        open(f"{sys.argv[2]}/test_{i:03d}.jpg", "wb").write(z.read(name))
PY
      touch "$dest/.complete"
    fi
    echo "$dest"
    ;;
  *)
    echo "usage: $0 [face-api|dlib|eval]" >&2
    exit 2
    ;;
esac
