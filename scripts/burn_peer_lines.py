#!/usr/bin/env python3
"""Turn the Burn harness's output (../shared/peers/burn-bench) into peer JSON lines.

The harness prints lines such as
    burn conv3d_fwd n2 c32 32x64x64: 1407.3 ms 10.30 GFLOP/s
    burn conv3d_fwd_bwd: 29000.0 ms 1.50 GFLOP/s
    burn matmul 1024: 55.5 ms 38.70 GFLOP/s
This script prints each as one JSON line with the op and case names of `cads bench`
(conv3d_fwd/c32, conv3d_fwd_bwd/c32, matmul/1024), for `cads bench --compare`:

    burn-bench-anchor | python3 scripts/burn_peer_lines.py --peer "burn 0.22 wgpu" > burn.jsonl

The harness's default conv shape (N2 C32 32x64x64 k3) is cads's `c32` case; other shapes are
left out with a note on stderr. Burn's figures are wall-clock round trips (every iteration reads
its result back), cads's are GPU timestamps: the lines say so in "timer". Standard library only.
"""
import argparse
import json
import re
import sys

CONV_C32 = "n2 c32 32x64x64"
LINE = re.compile(r"^burn (\S+)(?: ([^:]+))?: ([0-9.]+) ms ([0-9.]+) GFLOP/s$")


def convert(lines, peer):
    """Yield (dict or None, note) for each harness line that reports a time."""
    conv_shape = None
    for raw in lines:
        m = LINE.match(raw.strip())
        if not m:
            continue
        op, detail, ms, gflops = m.group(1), m.group(2), float(m.group(3)), float(m.group(4))
        if op == "conv3d_fwd":
            conv_shape = detail
        if op == "matmul":
            case = detail
        elif op in ("conv3d_fwd", "conv3d_fwd_bwd"):
            # The fwd_bwd line names no shape: it is the shape of the fwd line before it.
            case = "c32" if conv_shape == CONV_C32 else None
        else:
            case = None
        if case is None:
            yield None, f"left out (no cads case of that shape): {raw.strip()}"
            continue
        yield {"op": op, "case": case, "ms": ms, "gflops": gflops, "peer": peer,
               "timer": "wall"}, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", nargs="?", help="the harness output (default: stdin)")
    ap.add_argument("--peer", default="burn 0.22 wgpu", help="peer name on every line")
    args = ap.parse_args()
    text = open(args.input).read() if args.input else sys.stdin.read()
    for line, note in convert(text.splitlines(), args.peer):
        if line is None:
            print(note, file=sys.stderr)
        else:
            print(json.dumps(line))


if __name__ == "__main__":
    main()
