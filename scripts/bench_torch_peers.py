#!/usr/bin/env python3
"""PyTorch reference timings for the cads benchmark cases, on whatever device torch sees.

Prints one JSON line per case in the shape of `cads bench` (op, case, ms, gflops, adapter,
timer), so the two outputs can be compared line by line on the same machine. f32 throughout
with TF32 disabled: cads computes in f32, and TF32 tensor-core results would not be a like-for-
like comparison. Times are medians over fresh random inputs after warm-up, taken with CUDA
events on a GPU and the wall clock on the CPU.

    python3 scripts/bench_torch_peers.py [--filter NAME]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


def timed(fn, make, reps=20, warmup=3):
    cuda = torch.cuda.is_available()
    times = []
    for i in range(warmup + reps):
        args = make()
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args)
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            fn(*args)
            ms = (time.perf_counter() - t0) * 1e3
        if i >= warmup:
            times.append(ms)
    times.sort()
    return times[len(times) // 2]


def conv_cases(dev):
    # (case, N, Cin, Cout, D, H, W, k, stride, pad, groups) as in issue 3's table
    table = [
        ("c32", 2, 32, 32, 32, 64, 64, 3, 1, 1, 1),
        ("stem", 2, 1, 64, 32, 96, 96, 7, 2, 3, 1),
        ("c64", 2, 64, 64, 16, 48, 48, 3, 1, 1, 1),
        ("embed", 2, 64, 128, 16, 24, 24, 3, 2, 1, 1),
        ("sr8", 2, 64, 64, 16, 24, 24, 8, 8, 0, 1),
        ("dw512", 2, 512, 512, 8, 12, 12, 3, 1, 1, 512),
    ]
    for case, n, ci, co, d, h, w, k, s, p, g in table:
        def make(requires_grad=False):
            x = torch.randn(n, ci, d, h, w, device=dev, requires_grad=requires_grad)
            wt = torch.randn(co, ci // g, k, k, k, device=dev, requires_grad=requires_grad)
            return x, wt

        def fwd(x, wt):
            return F.conv3d(x, wt, stride=s, padding=p, groups=g)

        dout = (d + 2 * p - k) // s + 1
        hout = (h + 2 * p - k) // s + 1
        wout = (w + 2 * p - k) // s + 1
        flops = 2.0 * n * co * dout * hout * wout * (ci // g) * k ** 3
        yield "conv3d_fwd", case, lambda fwd=fwd, make=make: timed(fwd, make), flops

        def fwd_bwd(x, wt, fwd=fwd):
            y = fwd(x, wt)
            y.backward(torch.ones_like(y))

        yield "conv3d_fwd_bwd", case, lambda f=fwd_bwd, make=make: timed(f, lambda: make(True)), 3 * flops

    n, ci, co, d, h, w = 2, 128, 64, 16, 24, 24
    make_up = lambda rg=False: (torch.randn(n, ci, d, h, w, device=dev, requires_grad=rg),
                                torch.randn(ci, co, 2, 2, 2, device=dev, requires_grad=rg))
    up = lambda x, wt: F.conv_transpose3d(x, wt, stride=2)
    flops = 2.0 * n * d * h * w * ci * co * 8
    yield "conv_transpose3d_fwd", "up", lambda: timed(up, make_up), flops

    def up_fwd_bwd(x, wt):
        y = up(x, wt)
        y.backward(torch.ones_like(y))

    yield "conv_transpose3d_fwd_bwd", "up", lambda: timed(up_fwd_bwd, lambda: make_up(True)), 3 * flops


def matmul_cases(dev):
    for size in (256, 1024, 2048):
        make = lambda: (torch.randn(size, size, device=dev), torch.randn(size, size, device=dev))
        yield "matmul", str(size), lambda make=make: timed(torch.matmul, make), 2.0 * size ** 3


def attention_cases(dev):
    # Same cases and FLOP convention as src/bench/attention.rs: batch 2, head dim 64,
    # forward 4·N·L·M·C, backward 2.5× forward.
    table = [
        ("vol16x48x48_s1_L1152_M1_C64", 1152, 1, 64),
        ("vol16x48x48_s4_L4_M4_C512", 4, 4, 512),
        ("vol64x160x160_s1_L51200_M100_C64", 51200, 100, 64),
        ("vol64x160x160_s2_L6400_M100_C128", 6400, 100, 128),
        ("vol64x160x160_s3_L800_M100_C320", 800, 100, 320),
        ("vol64x160x160_s4_L100_M100_C512", 100, 100, 512),
    ]
    n = 2
    for case, l, m, c in table:
        heads = c // 64

        def make(l=l, m=m, heads=heads):
            return tuple(torch.randn(n, heads, x, 64, device=dev, requires_grad=True)
                         for x in (l, m, m))

        def fwd_bwd(q, k, v):
            F.scaled_dot_product_attention(q, k, v).sum().backward()

        yield ("attention_fwd_bwd", case, lambda make=make: timed(fwd_bwd, make),
               3.5 * 4.0 * n * l * m * c)


def pretrain_cases(dev):
    """`pretrain_step` as src/bench/pretrain.rs: one whole CADS iteration at batch 2 — teacher
    forward on (x1, x2) without grad, student forward on (x1, x2) and xD, the deep
    self-distillation loss, backward, per-tensor clip 0.3, AdamW, EMA of the teacher, center
    update — on random views x1, x2 [2, 1, 16, 48, 48] and xD [2, 1, 96, 96]. The model is the
    spec test's (scripts/make_cads_step_golden.py, on make_pvt_golden's encoder) with the sizes
    of the `tiny` and `cads` (b1) presets set before it is built. No drop path (the Rust step has
    it; its cost is a few elementwise ops). FLOPs: the 3D encoder only, 4 · 2B · f, as in Rust."""
    import os
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_cads_step_golden as golden
    import make_pvt_golden as pvt

    presets = {
        # name: (dims, heads, mlp ratios, depths, sr, (hidden, bottleneck, K)); stem = dims[0].
        "tiny_n2": ([16, 32, 48, 64], [1, 2, 3, 4], [2, 2, 2, 2], [1, 1, 1, 1], [8, 4, 2, 1],
                    (128, 64, 256)),
        "b1_n2": ([64, 128, 320, 512], [1, 2, 5, 8], [8, 8, 4, 4], [2, 2, 2, 2], [8, 4, 2, 1],
                  (2048, 256, 60000)),
    }
    n = 2
    for case, (dims, heads, ratios, depths, sr, (hidden, bottleneck, k)) in presets.items():
        def run(dims=dims, heads=heads, ratios=ratios, depths=depths, sr=sr, hidden=hidden,
                bottleneck=bottleneck, k=k):
            pvt.DIMS, pvt.HEADS, pvt.MLP_RATIOS, pvt.DEPTHS, pvt.SR = dims, heads, ratios, depths, sr
            golden.HIDDEN, golden.BOTTLENECK, golden.K = hidden, bottleneck, k
            student = golden.Student().to(dev)
            for m in student.modules():
                if isinstance(m, golden.DinoHead):
                    torch.nn.init.normal_(m.last_layer.weight_v, std=0.02)
            teacher = golden.Teacher().to(dev)
            teacher.load_state_dict(student.state_dict(), strict=False)
            for p in teacher.parameters():
                p.requires_grad_(False)
            params = list(student.parameters())
            decay = [p for p in params if p.dim() > 1]
            no_decay = [p for p in params if p.dim() <= 1]
            opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.04},
                                     {"params": no_decay, "weight_decay": 0.0}], lr=5e-4)
            center = torch.zeros(1, k, device=dev)
            pairs = [(pt, ps) for (name, pt) in teacher.named_parameters()
                     for (sname, ps) in [(name, dict(student.named_parameters())[name])]]

            def step(x1, x2, xd):
                nonlocal center
                x12 = torch.cat([x1, x2])
                with torch.no_grad():
                    t = teacher(x12)
                out = student(x12, xd)
                golden.TEACHER_TEMP = 0.04
                loss, _ = golden.cads_loss(out, t, center)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                for p in params:
                    if p.grad is not None:
                        torch.nn.utils.clip_grad_norm_(p, 0.3)
                opt.step()
                with torch.no_grad():
                    torch._foreach_mul_([a for a, _ in pairs], 0.996)
                    torch._foreach_add_([a for a, _ in pairs], [b for _, b in pairs], alpha=0.004)
                    center = 0.9 * center + 0.1 * t.mean(0, keepdim=True)

            def make():
                return (torch.rand(n, 1, 16, 48, 48, device=dev) * 2 - 1,
                        torch.rand(n, 1, 16, 48, 48, device=dev) * 2 - 1,
                        torch.rand(n, 1, 96, 96, device=dev) * 2 - 1)

            reps = 20 if dev == "cuda" else 3
            return timed(step, make, reps=reps, warmup=2)

        f = encoder_flops(dims, ratios, depths, sr, [16, 48, 48])
        yield "pretrain_step", case, run, 4 * 2 * n * f


def segment_cases(dev):
    """`segment_step` as src/bench/segment.rs: one PVT-UNet training step at batch 2, 2 classes —
    forward with the five deep-supervision outputs, nnU-Net's Dice + CE (weights 2^-i, the
    coarsest off, normalised; Dice over the foreground per sample, smoothing 1e-5; labels of
    output i sampled at voxel j·s + s//2), backward, SGD Nesterov 0.99 with weight decay 3e-5 —
    on random inputs [2, 1, D, H, W] and random labels. Our own PyTorch PVT-UNet: the PVTv2-b1
    encoder of make_pvt_golden (volume path; stem 64, widths 64/128/320/512) under the decoder of
    src/models/pvt_unet.rs (transposed conv kernel = stride up to each skip — (1, 2, 2) onto the
    stem skip, (2, 2, 2) above —, concat, [Conv 3³ no bias → InstanceNorm → LeakyReLU 0.01] × 2;
    final k2 s2 up to 32 channels and a block; 1×1×1 heads). No drop path (the Rust step has
    0.1; a few elementwise ops). FLOPs as in Rust: 3 · N · forward."""
    import os
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_pvt_golden as pvt
    import torch.nn as nn

    dims, heads, ratios, depths, sr = [64, 128, 320, 512], [1, 2, 5, 8], [8, 8, 4, 4], [2, 2, 2, 2], [8, 4, 2, 1]
    final, k, n = 32, 2, 2
    strides = [(1, 1, 1), (2, 2, 2), (2, 4, 4), (4, 8, 8), (8, 16, 16)]

    def block(cin, cout):
        layers = []
        for c in (cin, cout):
            layers += [nn.Conv3d(c, cout, 3, padding=1, bias=False),
                       nn.InstanceNorm3d(cout, eps=1e-5, affine=False), nn.LeakyReLU(0.01)]
        return nn.Sequential(*layers)

    class PvtUnet(nn.Module):
        def __init__(self):
            super().__init__()
            pvt.DIMS, pvt.HEADS, pvt.MLP_RATIOS, pvt.DEPTHS, pvt.SR = dims, heads, ratios, depths, sr
            self.encoder = pvt.Encoder()
            skip = [dims[0], dims[0], dims[1], dims[2]]
            below = [dims[0], dims[1], dims[2], dims[3]]
            self.ups = nn.ModuleList(
                nn.ConvTranspose3d(below[l], skip[l], st, stride=st)
                for l, st in enumerate([(1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)]))
            self.blocks = nn.ModuleList(block(2 * c, c) for c in skip)
            self.final_up = nn.ConvTranspose3d(skip[0], final, 2, stride=2)
            self.final_block = block(final, final)
            self.heads = nn.ModuleList(nn.Conv3d(c, k, 1) for c in [final] + skip)

        def forward(self, x):
            skip, stages = self.encoder(x)  # channels-last, as cads returns them
            skips = [skip] + stages[:3]
            skips = [s.movedim(-1, 1) for s in skips]
            h = stages[3].movedim(-1, 1)
            outs = []
            for l in range(3, -1, -1):
                h = self.blocks[l](torch.cat([self.ups[l](h), skips[l]], 1))
                outs.append(self.heads[l + 1](h))
            h = self.final_block(self.final_up(h))
            outs.append(self.heads[0](h))
            return outs[::-1]

    raw = [0.5 ** i for i in range(4)] + [0.0]
    weights = [w / sum(raw) for w in raw]

    def seg_loss(outs, labels):
        total = 0.0
        for o, w, s in zip(outs, weights, strides):
            if w == 0.0:
                continue
            lab = labels[:, s[0] // 2::s[0], s[1] // 2::s[1], s[2] // 2::s[2]]
            ce = F.cross_entropy(o, lab)
            q = torch.softmax(o, 1)
            t = F.one_hot(lab, k).movedim(-1, 1).to(q.dtype)
            dice = (2 * (q * t).sum((2, 3, 4)) + 1e-5) / (q.sum((2, 3, 4)) + t.sum((2, 3, 4)) + 1e-5)
            total = total + w * (ce + 1 - dice[:, 1:].mean())
        return total

    def decoder_flops(dhw):
        vol = lambda st: (dhw[0] // st[0]) * (dhw[1] // st[1]) * (dhw[2] // st[2])  # noqa: E731
        skip = [dims[0], dims[0], dims[1], dims[2]]
        below = [dims[0], dims[1], dims[2], dims[3]]
        f = 0.0
        for l in range(4):
            v, c = vol(strides[l + 1]), skip[l]
            f += 2 * v * below[l] * c + 2 * v * 27 * (2 * c * c + c * c) + 2 * v * c * k
        v = vol((1, 1, 1))
        return f + 2 * v * skip[0] * final + 2 * v * 27 * 2 * final * final + 2 * v * final * k

    for case, dhw in (("vol16x64x64_n2", [16, 64, 64]), ("vol64x160x160_n2", [64, 160, 160])):
        def run(dhw=dhw):
            torch.manual_seed(0)
            net = PvtUnet().to(dev)
            opt = torch.optim.SGD([p for name, p in net.named_parameters() if "_2D" not in name],
                                  lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)

            def step(x, labels):
                loss = seg_loss(net(x), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            def make():
                return (torch.rand(n, 1, *dhw, device=dev) * 2 - 1,
                        torch.randint(0, k, (n, *dhw), device=dev))

            small = dhw[0] * dhw[1] * dhw[2] <= 16 * 64 * 64
            reps = 20 if dev == "cuda" else (5 if small else 1)
            return timed(step, make, reps=reps, warmup=2 if small or dev == "cuda" else 1)

        f = encoder_flops(dims, ratios, depths, sr, dhw) + decoder_flops(dhw)
        yield "segment_step", case, run, 3 * n * f


def encoder_flops(dims, ratios, depths, srs, dhw):
    """The 3D encoder's forward FLOPs of one sample (src/bench/pvt.rs forward_flops)."""
    vol = lambda g: g[0] * g[1] * g[2]  # noqa: E731
    s = dims[0]
    g0 = [dhw[0] // 2, dhw[1] // 2, dhw[2] // 2]
    g = [dhw[0] // 2, dhw[1] // 4, dhw[2] // 4]
    grids = []
    for st in range(4):
        if st > 0:
            g = [-(-v // 2) for v in g]
        grids.append(g)
    f = 2 * vol(g0) * 343 * s + 2 * 2 * vol(g0) * 27 * s * s + 2 * vol(grids[0]) * 27 * s * dims[0]
    for st in range(4):
        l, c, r, sr = vol(grids[st]), dims[st], ratios[st], srs[st]
        if st > 0:
            f += 2 * l * 27 * dims[st - 1] * c
        m = vol([v // sr for v in grids[st]]) if sr > 1 else l
        sr_conv = 2 * m * sr ** 3 * c * c if sr > 1 else 0
        block = (2 * l * c * c + sr_conv + 2 * m * c * 2 * c + 4 * l * m * c + 2 * l * c * c
                 + 2 * 2 * l * c * r * c + 2 * l * 27 * r * c)
        f += depths[st] * block
    return f


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--filter", default="")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    adapter = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    for family in (matmul_cases, conv_cases, attention_cases, pretrain_cases, segment_cases):
        for op, case, run, flops in family(dev):
            if args.filter not in f"{op}/{case}":
                continue
            ms = run()
            print(json.dumps({"op": op, "case": case, "ms": round(ms, 4),
                              "gflops": round(flops / ms / 1e6, 2), "adapter": adapter,
                              "peer": f"torch {torch.__version__}", "timer": "cuda-event" if dev == "cuda" else "wall"}),
                  flush=True)


if __name__ == "__main__":
    main()
