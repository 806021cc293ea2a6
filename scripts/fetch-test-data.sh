#!/usr/bin/env bash
# Fetches the test data that comes from package registries (never from a model hub):
# the npm package @vladmandic/face-api 1.7.15, whose demo/ photos the real-photo tests use
# and whose model/ weights models/scripts/convert.py converts.
# Prints the unpacked package directory.
set -euo pipefail
version=1.7.15
dest="${FACEREC_TESTDATA:-$HOME/.cache/facerec/testdata}/face-api-$version"
if [ ! -f "$dest/package/demo/sample1.jpg" ]; then
  mkdir -p "$dest"
  (cd "$dest" && npm pack --silent "@vladmandic/face-api@$version" >/dev/null && tar xzf vladmandic-face-api-$version.tgz && rm -f vladmandic-face-api-$version.tgz)
fi
echo "$dest/package"
