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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--filter", default="")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    adapter = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    for family in (matmul_cases, conv_cases, attention_cases):
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
