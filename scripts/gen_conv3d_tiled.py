#!/usr/bin/env python3
"""Writes the unrolled tiled forward entry points into shaders/conv3d.wgsl (between the
GENERATED markers). Register tile: TM output voxels x TN output channels per invocation, written
out as straight-line code with constant indices (what lavapipe runs fastest). Lanes run over
voxels; every weight address is workgroup-uniform, so lavapipe loads it once for the SIMD group;
the input load is the only per-lane (gather) load, and it feeds 4·TN FMAs (c4) or TN (c1).

Split-K: wg.z = channel block + (Cout/TN)·split; split s sums taps [s·chunk, (s+1)·chunk) and
writes its partial tile to y at offset s·M·Cout (the launcher sums the splits; bias only in split
0). With splits = 1 and chunk = all taps this is the plain convolution.

Run from anywhere:  python3 scripts/gen_conv3d_tiled.py [--out-dir DIR]
Without --out-dir the section is rewritten in place; with it the whole spliced file is written to
DIR/conv3d.wgsl and the committed shader is left alone (tests/generated_shaders.rs compares
that output with the committed file byte for byte)."""
import argparse
import pathlib

def forward(name, c4, TM, TN):
    L = []
    a = L.append
    nt = TN // 4
    a("@compute @workgroup_size(64)")
    a(f"fn {name}(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,")
    a("        @builtin(local_invocation_index) lid: u32) {")
    a("    // Voxel j of this lane is m0 + j·64: adjacent lanes take adjacent voxels, so each load")
    a("    // and store of a SIMD group / warp touches consecutive memory (coalesced on GPUs).")
    a(f"    let m0 = (wg.x + wg.y * nwg.x) * {64 * TM}u + lid;")
    a("    // Bounds guard without control flow: out-of-range invocations compute a clamped voxel")
    a("    // (voxel() marks it not live) and skip only the final stores. A SIMD compiler such as")
    a("    // lavapipe runs both sides of every `if` masked, so branches cost on every lane (see")
    a("    // docs/lavapipe-loads.md).")
    a(f"    let cblocks = p.cout / {TN}u;")
    a("    let split = wg.z / cblocks;")
    a(f"    let co0 = (wg.z % cblocks) * {TN}u;")
    a("    let cout4 = p.cout / 4u;")
    a("    let grp = co0 / p.cout_g;")
    for j in range(TM):
        a(f"    let v{j} = voxel(m0 + {64 * j}u);")
    for j in range(TM):
        for t in range(nt):
            a(f"    var acc{j}_{t} = vec4<f32>(0.0);")
    a("    // bias without an `if` (a masked branch would cost as much as the load itself)")
    a("    let bias_on = f32(p.has_bias != 0u && split == 0u);")
    for t in range(nt):
        a(f"    let b{t} = bias4[co0 / 4u + {t}u] * bias_on;")
        for j in range(TM):
            a(f"    acc{j}_{t} = b{t};")
    if c4:
        a("    let cstep = p.cin / 4u;           // vec4s per input voxel")
        a("    let cbase = grp * (p.cin_g / 4u); // the group's first vec4")
        a("    let nc = p.cin_g / 4u;")
    else:
        a("    let cstep = p.cin;")
        a("    let cbase = grp * p.cin_g;")
        a("    let nc = p.cin_g;")
    a("    let tap_end = min(p.kd * p.kh * p.kw, (split + 1u) * p.chunk);")
    a("    for (var tap = split * p.chunk; tap < tap_end; tap++) {")
    a("        let kw = tap % p.kw;")
    a("        let kh = (tap / p.kw) % p.kh;")
    a("        let kd = tap / (p.kw * p.kh);")
    for j in range(TM):
        a(f"        let id{j} = v{j}.d0 + i32(kd * p.dd);")
        a(f"        let ih{j} = v{j}.h0 + i32(kh * p.dh);")
        a(f"        let iw{j} = v{j}.w0 + i32(kw * p.dw);")
        a(f"        let ok{j} = v{j}.live && id{j} >= 0 && id{j} < i32(p.d) && ih{j} >= 0 && ih{j} < i32(p.h) && iw{j} >= 0 && iw{j} < i32(p.w);")
        a(f"        let o{j} = ((v{j}.b * p.d + u32(clamp(id{j}, 0, i32(p.d) - 1))) * p.h + u32(clamp(ih{j}, 0, i32(p.h) - 1))) * p.w + u32(clamp(iw{j}, 0, i32(p.w) - 1));")
        a(f"        let xb{j} = o{j} * cstep + cbase;")
    a("        // weight row (tap, cig = 0, co0) in vec4 units; one cig row is cout4 vec4s")
    a("        var wr = ((kd * p.kh + kh) * p.kw + kw) * p.cin_g * cout4 + co0 / 4u;")
    a("        for (var c = 0u; c < nc; c++) {")
    comps = "xyzw"
    if c4:
        for j in range(TM):
            a(f"            let x{j} = select(vec4<f32>(0.0), xin4[xb{j} + c], ok{j});")
        for r in range(4):
            for t in range(nt):
                a(f"            let w{r}_{t} = w4[wr + {r}u * cout4 + {t}u];")
            for j in range(TM):
                for t in range(nt):
                    a(f"            acc{j}_{t} = fma(vec4<f32>(x{j}.{comps[r]}), w{r}_{t}, acc{j}_{t});")
        a("            wr += 4u * cout4;")
    else:
        for j in range(TM):
            a(f"            let x{j} = select(0.0, xin1[xb{j} + c], ok{j});")
        for t in range(nt):
            a(f"            let w0_{t} = w4[wr + {t}u];")
        for j in range(TM):
            for t in range(nt):
                a(f"            acc{j}_{t} = fma(vec4<f32>(x{j}), w0_{t}, acc{j}_{t});")
        a("            wr += cout4;")
    a("        }")
    a("    }")
    a("    let ybase = split * p.m_total * cout4;")
    for j in range(TM):
        a(f"    if (m0 + {64 * j}u < p.m_total) {{")
        for t in range(nt):
            a(f"        y4[ybase + (m0 + {64 * j}u) * cout4 + co0 / 4u + {t}u] = acc{j}_{t};")
        a("    }")
    a("}")
    return "\n".join(L)

VARIANTS = [(8, 8), (16, 8)]  # measured on lavapipe c32: m8n8 ≈ m16n8 > m4n8 > m2n16 ≈ m8n16 > m1n32
body = ""
for TM, TN in VARIANTS:
    for c4 in (True, False):
        body += forward(f"conv3d_tiled_m{TM}n{TN}_{'c4' if c4 else 'c1'}", c4, TM, TN) + "\n\n"
path = pathlib.Path(__file__).resolve().parent.parent / "shaders" / "conv3d.wgsl"
src = path.read_text(encoding="utf-8")
begin, end = "// BEGIN GENERATED by scripts/gen_conv3d_tiled.py\n", "// END GENERATED\n"
if begin in src:
    src = src[: src.index(begin)] + begin + body + end + src[src.index(end) + len(end):]
else:
    src = src + "\n" + begin + body + end
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out-dir", type=pathlib.Path, default=path.parent,
                    help="folder to write %s into (default: the repository's shaders/)" % path.name)
(parser.parse_args().out_dir / path.name).write_bytes(src.encode())
