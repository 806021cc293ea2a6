# The gallery of the original workload, shared by the benchmark scripts: the ten distinct
# CSE546 photos, each under its expected name in WORK/people/<name>/, enrolled into
# WORK/gallery.frg (the gallery file `facerec up` imports once from --data/out/gallery/).
# usage: cse546_gallery BIN IMAGES EXPECTED_CSV WORK
cse546_gallery() {
  local bin=$1 images=$2 expected=$3 work=$4
  rm -rf "$work/people"
  python3 - "$images" "$expected" "$work/people" <<'PY'
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
  rm -f "$work/gallery.frg"
  "$bin" enroll --gallery "$work/gallery.frg" --dir "$work/people" >/dev/null
}
