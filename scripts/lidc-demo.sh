#!/usr/bin/env bash
# The LIDC-IDRI-0001 demonstration of docs/segmentation-lidc.md: PVT-UNet from a CADS-pretrained
# encoder against the same network from scratch, same split, seed and budget.
#
#   scripts/lidc-demo.sh [SCRATCH_DIR]        (default ${TMPDIR:-/tmp}/cads-lidc)
#
# Needs data/cxr.nii.gz, data/mask.nii.gz and data/structures.csv (scripts/fetch-sample-data.sh;
# LIDC-IDRI-0001 from the LIDC-IDRI collection of The Cancer Imaging Archive, CC BY 3.0, with its
# organ label map). Steps, each writing under SCRATCH_DIR (nothing under the repository):
#   1. examples/lidc_slabs: merge the label map into 7 large classes, reduce in-plane 4x, cut
#      cranio-caudal slabs (2 held out) into an nnU-Net raw folder, and the training slabs at
#      full resolution for pretraining;
#   2. cads inspect on every written file, and a check of its geometry against the CT's;
#   3. cads pretrain (tiny preset) on the training slabs only;
#   4. cads segment train twice (cads-tiny model): from scratch and from the pretrained teacher;
#   5. cads segment predict on the held-out slabs and cads segment evaluate (Dice, HD95, NSD);
#   6. scripts/lidc_dice_curves.py: the two validation Dice curves, one panel per class, and
#      scripts/lidc_summary.py: the tables of docs/segmentation-lidc.md (SCRATCH_DIR/summary.md).
#
# Sizes are for a 2-core machine with software Vulkan (lavapipe): about 30 min of pretraining
# and 20-25 min per segmentation run there. Override with the variables below, e.g.
# PRETRAIN_EPOCHS=150 EPOCHS=50 ITERS=250 PATCH=32,128,128 on a real GPU.
# The Vulkan runner: $CADS_RUNNER when set (may be empty: the system driver), else the Mesa 26
# lavapipe of scripts/newer-lavapipe.sh when it can be made, else the system driver.
set -euo pipefail
cd "$(dirname "$0")/.."

S=${1:-${TMPDIR:-/tmp}/cads-lidc}
FACTOR=${FACTOR:-4}
SLAB=${SLAB:-16}
VAL_SLABS=${VAL_SLABS:-1,5}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-40}
# τt held at its start value: with the preset's ramp to 0.07 the teacher went uniform on one CT.
TEACHER_TEMP_END=${TEACHER_TEMP_END:-0.04}
PRETRAIN_ITERS=${PRETRAIN_ITERS:-8}
EPOCHS=${EPOCHS:-10}
ITERS=${ITERS:-20}
PATCH=${PATCH:-16,64,64}
BATCH=${BATCH:-2}
OPTIMIZER=${OPTIMIZER:-adamw}
SEED=${SEED:-0}
export WGPU_BACKEND=vulkan

for f in data/cxr.nii.gz data/mask.nii.gz data/structures.csv; do
  [ -e "$f" ] || { echo "lidc-demo: $f is missing (scripts/fetch-sample-data.sh)" >&2; exit 1; }
done
if [ -z "${CADS_RUNNER+set}" ]; then
  CADS_RUNNER=$(scripts/newer-lavapipe.sh 2>/dev/null) || CADS_RUNNER=
fi
echo "lidc-demo: scratch $S, runner '${CADS_RUNNER:-system driver}'"
cargo build --release --bin cads --example lidc_slabs
cads() { ${CADS_RUNNER:+"$CADS_RUNNER"} target/release/cads "$@"; }
mkdir -p "$S"

# 1. The dataset.
target/release/examples/lidc_slabs data/cxr.nii.gz data/mask.nii.gz data/structures.csv "$S" \
  --factor "$FACTOR" --slab "$SLAB" --val "$VAL_SLABS" | tee "$S/slabs.txt"
# The held-out fraction that holds out exactly the lidc_va_* slabs (they sort last).
VAL_FRACTION=$(sed -n 's/.*--val-fraction \([0-9.]*\)).*/\1/p' "$S/slabs.txt")

# 2. Every written file read back: shape, spacing, orientation and affine, checked against the
# CT's (in-plane spacing x FACTOR, the slab's first slice, the block centre as the origin).
cads inspect data/cxr.nii.gz --json > "$S/inspect_ct.json"
: > "$S/inspect.jsonl"
for f in "$S"/dataset/imagesTr/*.nii.gz "$S"/dataset/labelsTr/*.nii.gz "$S"/pretrain_ct/*.nii.gz; do
  cads inspect "$f" --json | tr -d '\n' >> "$S/inspect.jsonl"
  echo >> "$S/inspect.jsonl"
done
python3 - "$S/inspect_ct.json" "$S/inspect.jsonl" "$FACTOR" <<'EOF'
import json, re, sys
ct = json.load(open(sys.argv[1]))
f = int(sys.argv[3])
A = ct["affine"]
checked = 0
for line in open(sys.argv[2]):
    r = json.loads(line)
    name = r["path"]
    k0, k1 = map(int, re.search(r"_z(\d+)-(\d+)", name).groups())
    g = 1 if "/pretrain_ct/" in name else f
    c = (g - 1) / 2
    want = [[A[i][0] * g, A[i][1] * g, A[i][2], A[i][0] * c + A[i][1] * c + A[i][2] * k0 + A[i][3]]
            for i in range(3)]
    got = r["affine"]
    err = max(abs(got[i][j] - want[i][j]) for i in range(3) for j in range(4))
    dims = [ct["shape"][0] // g, ct["shape"][1] // g, k1 - k0 + 1]
    if err > 1e-3 or r["shape"] != dims or r["orientation"] != ct["orientation"]:
        sys.exit(f"{name}: shape {r['shape']} (want {dims}), affine {got} (want {want}), "
                 f"orientation {r['orientation']} (want {ct['orientation']})")
    checked += 1
print(f"geometry: {checked} files match the CT's grid (largest affine error < 1e-3 mm)")
EOF

# 3. Pretraining on the training slabs only (the held-out slabs' voxels are never seen).
cads pretrain --data "$S/pretrain_ct" --out "$S/pretrain" --preset tiny \
  --epochs "$PRETRAIN_EPOCHS" --iters-per-epoch "$PRETRAIN_ITERS" --batch 2 \
  --teacher-temp-end "$TEACHER_TEMP_END" --checkpoint-every 0 --seed "$SEED" | tee "$S/pretrain.log"

# 4. The two runs: identical but for --init-from.
common=(--data "$S/dataset" --model cads-tiny --patch "$PATCH" --batch "$BATCH" --epochs "$EPOCHS"
  --iterations "$ITERS" --optimizer "$OPTIMIZER" --val-fraction "$VAL_FRACTION" --seed "$SEED")
cads segment train "${common[@]}" --out "$S/run_scratch" | tee "$S/run_scratch.log"
cads segment train "${common[@]}" --out "$S/run_pretrained" \
  --init-from "$S/pretrain/teacher_backbone.safetensors" | tee "$S/run_pretrained.log"

# 5. Held-out slabs: predict with each best checkpoint, evaluate against the reference labels.
for run in scratch pretrained; do
  cads segment predict --checkpoint "$S/run_$run/checkpoint_best.safetensors" \
    --input "$S/dataset/imagesTs" --out "$S/pred_$run"
  cads segment evaluate --pred "$S/pred_$run" --gt "$S/dataset/labelsTs" \
    --json "$S/eval_$run.json" --csv "$S/eval_$run.csv"
done

# 6. The Dice curves side by side.
python3 scripts/lidc_dice_curves.py "$S/run_scratch/metrics.jsonl" \
  "$S/run_pretrained/metrics.jsonl" "$S/dice_curves.png"
python3 scripts/lidc_summary.py "$S" | tee "$S/summary.md"
echo "lidc-demo: done; evaluations $S/eval_{scratch,pretrained}.{json,csv}, curves $S/dice_curves.png"
