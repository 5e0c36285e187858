#!/usr/bin/env python3
"""Convert a CADS pretraining checkpoint (PyTorch) to safetensors for cads.

    python3 scripts/convert_cads_checkpoint.py checkpoint.pth teacher.safetensors [--key teacher]

Takes the state dict under `--key` (the authors' checkpoints keep the EMA teacher under
`teacher`), drops a DistributedDataParallel `module.` prefix, converts every tensor to float32 and
writes it with its PyTorch name and layout (`backbone.patch_embed1.proj.0.weight`,
`backbone.block1.0.attn.q.weight`, `head.last_layer.weight_v`, ...). cads converts layouts when it
loads the file (`PvtEncoder::load_safetensors`) and reports missing and unexpected keys.

Needs torch to read the checkpoint; the safetensors file is written by hand (8-byte little-endian
header length, JSON header, raw little-endian data), so no other package is required.
`--selftest OUT` writes a small synthetic file without torch (used by the test suite).
"""
import argparse
import json
import struct
import sys


def write_safetensors(tensors, path):
    """tensors: name -> (shape list, float32 little-endian bytes). Written to path.tmp, renamed."""
    header, offset = {}, 0
    for name in sorted(tensors):
        shape, data = tensors[name]
        count = 1
        for d in shape:
            count *= d
        if len(data) != 4 * count:
            raise ValueError(f"{name}: {len(data)} bytes for shape {shape}")
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in sorted(tensors):
            f.write(tensors[name][1])
    import os
    os.replace(tmp, path)


def from_checkpoint(checkpoint, key):
    import torch  # only needed for real checkpoints

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = ckpt[key] if isinstance(ckpt, dict) and key in ckpt else ckpt
    out = {}
    for name, value in state.items():
        if not hasattr(value, "dtype"):
            continue
        if name.startswith("module."):
            name = name[len("module."):]
        t = value.detach().to(torch.float32).contiguous().cpu()
        out[name] = (list(t.shape), t.numpy().astype("<f4").tobytes())
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?")
    p.add_argument("output", nargs="?")
    p.add_argument("--key", default="teacher")
    p.add_argument("--selftest", metavar="OUT")
    args = p.parse_args()
    if args.selftest:
        values = [float(i) * 0.5 for i in range(8)]
        write_safetensors(
            {
                "backbone.norm1.weight": ([8], struct.pack("<8f", *values)),
                "head.last_layer.weight_g": ([1, 1], struct.pack("<f", 1.0)),
            },
            args.selftest,
        )
        return 0
    if not (args.checkpoint and args.output):
        p.error("checkpoint and output are required")
    tensors = from_checkpoint(args.checkpoint, args.key)
    write_safetensors(tensors, args.output)
    print(f"wrote {len(tensors)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
