#!/usr/bin/env bash
# One run on a lent GPU machine: is every kernel variant right there, and how fast is it next to
# PyTorch on the same GPU. Prepared here by scripts/prepare-device-check.sh; then, through the
# device tool, from the repository root:
#
#   run(command="bash scripts/device-check.sh", carry=[".device"], timeout_s=600)
#
# Steps, each under its own time limit so the run ends inside one command (the limits add up to
# 560 s; CHECK_S, PEERS_S and BENCH_S override them) and what it got so far is kept:
#   1. the Vulkan loader from .device/gl when the machine has none; the NVIDIA ICD named when the
#      loader finds no driver by itself;
#   2. `cads info` and nvidia-smi's name, driver and clocks (when there is nvidia-smi);
#   3. `cads check --json`: every kernel variant against the CPU reference (the GPU-only ones, the
#      workgroup-memory tiles, implicit-GEMM convs and cooperative matrices, have no other test
#      on a GPU);
#   4. scripts/bench_torch_peers.py: the PyTorch peers (f32 with TF32 off, and AMP) on this GPU;
#   5. `cads bench --filter TARGETS --compare peers.jsonl --report report`: the cases of the
#      real-GPU targets and the ops the peers time (BENCH_FILTER= runs every case), with the
#      peers beside them, report.md and the PNG charts.
# Everything goes into $OUT/device-check.tar.gz (the tool brings back at most 8 files), with
# steps.log, summary.txt and check-failures.txt beside it for a first look. Record the numbers in
# docs/bench-<gpu>.md with this command.
#
# On a machine without $OUT (a GPU workstation, say) it writes to ./device-check-out.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/device-check-out}
work=$(mktemp -d /tmp/cads-device-check.XXXXXX)
cads=$PWD/.device/cads
mkdir -p "$out"

log() { echo "[$(date -u +%T)] $*" | tee -a "$work/steps.log"; }

finish() {
    tar -czf "$out/device-check.tar.gz" -C "$work" .
    cp "$work/steps.log" "$out/" 2>/dev/null
    {
        grep -h '"passed":false' "$work/check.jsonl" 2>/dev/null || true
    } > "$out/check-failures.txt"
    {
        head -n 3 "$work/info.txt" 2>/dev/null
        echo "check: $(grep -c '"passed":true' "$work/check.jsonl" 2>/dev/null) passed," \
            "$(grep -c '"passed":false' "$work/check.jsonl" 2>/dev/null) failed"
        echo "peers: $(wc -l < "$work/peers.jsonl" 2>/dev/null) lines;" \
            "bench: $(wc -l < "$work/bench.jsonl" 2>/dev/null) lines"
    } > "$out/summary.txt"
    cat "$out/summary.txt"
}
trap finish EXIT

if [ ! -x "$cads" ]; then
    log "no .device/cads: run scripts/prepare-device-check.sh here first and carry .device"
    exit 1
fi

# 1. Loader and driver.
if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
    log "no Vulkan loader: unpacking .device/gl"
    for f in .device/gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if ! "$cads" info > "$work/info.txt" 2>&1; then
    nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    log "cads info found no adapter; trying VK_DRIVER_FILES=$nvidia_icd"
    export VK_DRIVER_FILES=$nvidia_icd
    "$cads" info > "$work/info.txt" 2>&1 || { log "still no adapter"; exit 1; }
fi
log "adapter: $(sed -n 's/^adapter: *//p' "$work/info.txt")"

# 2. The GPU as the driver reports it.
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
        --format=csv > "$work/nvidia-smi.csv" 2>&1
fi

# 3. Correctness of every variant.
log "cads check"
timeout "${CHECK_S:-120}" "$cads" check --json > "$work/check.jsonl" 2> "$work/check.err"
log "cads check: exit $? ($(tail -n 1 "$work/check.err"))"

# 4. PyTorch on the same GPU.
log "PyTorch peers"
timeout "${PEERS_S:-200}" python3 scripts/bench_torch_peers.py \
    > "$work/peers.jsonl" 2> "$work/peers.err"
log "PyTorch peers: exit $?, $(wc -l < "$work/peers.jsonl") lines"

# 5. The suite beside the peers.
compare=()
[ -s "$work/peers.jsonl" ] && compare=(--compare "$work/peers.jsonl")
# The cases of the real-GPU targets (issue 13) and the ops the peers time; BENCH_FILTER= (empty)
# runs the whole suite.
targets='matmul/|conv3d_fwd/c32|conv3d_bwd_input/c32|conv3d_bwd_weight/c32|conv3d_fwd_bwd/c32'
targets+='|conv_transpose3d|attention|pvt_encoder_fwd_bwd|pretrain_step/b1|segment_step|drr_fwd'
filter=(--filter "${BENCH_FILTER-$targets}")
[ -z "${filter[1]}" ] && filter=()
log "cads bench ${filter[*]} ${compare[*]}"
timeout "${BENCH_S:-240}" "$cads" bench "${filter[@]}" "${compare[@]}" --report "$work/report" \
    > "$work/bench.jsonl" 2> "$work/bench.err"
log "cads bench: exit $?, $(wc -l < "$work/bench.jsonl") lines"
