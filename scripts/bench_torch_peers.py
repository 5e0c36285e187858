#!/usr/bin/env python3
"""PyTorch peers of the `cads bench` cases: one JSON line per case, on whatever device torch sees.

The lines have the shape `cads bench` prints (op, case, ms, gflops, adapter, timer, peer), so
`cads bench --compare PEERS.jsonl` can put them beside our own lines. Times are medians over
fresh random inputs after warm-up: CUDA events on a GPU, the wall clock on the CPU (with torch's
default thread count, printed as "threads").

Op cases (matmul, conv3d, conv_transpose3d, attention): f32 with TF32 off, since cads computes
in f32 and TF32 tensor-core results would not be a like-for-like comparison.

Whole-step cases (scripts/torch_step_peers.py, our own PyTorch versions of the PVTv2-b1 encoder
step `pvt_encoder_fwd_bwd`, the CADS pretraining step `pretrain_step` and the PVT-UNet step
`segment_step`, at the shapes of src/bench/{pvt,pretrain,segment}.rs) run once per precision:
  "precision":"f32"  float32, TF32 off;
  "precision":"amp"  the forward under torch.autocast: float16 with a GradScaler on CUDA,
                     bfloat16 on the CPU (named in "amp_dtype"); weights, gradients and
                     optimizer state stay float32.
Each adds "peak_bytes", measured on one more step after the timed ones, and "peak_measure":
  cuda_max_memory_allocated  torch.cuda.max_memory_allocated() over the step, after
                     reset_peak_memory_stats() with the weights, optimizer state and inputs in
                     place: every tensor live during the step, in the caching allocator's
                     blocks; the allocator's unused reserve is not counted. cads's peak_bytes
                     (its buffer pool's peak during one step) counts the same things.
  cpu_tensor_bytes   the bytes of the tensors live when the step starts (weights, buffers,
                     optimizer state, inputs; each storage once) plus the peak of the running
                     sum of the CPU allocations and frees that torch.profiler(profile_memory=
                     True) records during the step (its Chrome trace's "[memory]" events).
                     Tensors only: not the allocator's cache or fragmentation, not oneDNN
                     scratch memory that bypasses that allocator, not Python objects. A lower
                     bound of what the step needs, comparable with the CUDA figure; not the
                     process's resident memory.

    python3 scripts/bench_torch_peers.py --small > peers.jsonl        # CPU-sized step cases
    python3 scripts/bench_torch_peers.py --filter pvt_encoder --precision f32
"""
import argparse
import json
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_step_peers as steps  # noqa: E402


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


def step_cases(dev, precisions, small_only):
    """The whole-step cases, one line each per precision: ms and peak memory."""
    for op, case, build, flops, small in steps.cases():
        if small_only and not small:
            continue
        for name in precisions:
            prec = steps.Precision(name, dev)

            def run(build=build, prec=prec, small=small):
                c = build(dev, prec)
                # CPU steps take 0.1 s (tiny) to minutes (the large shapes): few repetitions.
                reps, warmup = (20, 3) if dev == "cuda" else ((5, 2) if small else (1, 1))
                ms = timed(c.step, c.make, reps=reps, warmup=warmup)
                return ms, peak_bytes(dev, c)

            extra = {"precision": name}
            if prec.dtype is not None:
                extra["amp_dtype"] = str(prec.dtype).removeprefix("torch.")
            yield op, case, run, flops, extra


def peak_bytes(dev, case):
    """(peak bytes of one step on fresh inputs, the measure's name); see the module doc."""
    inputs = case.make()
    # Every step drops the previous gradients before it allocates anything; drop them here
    # instead: on the CPU the profiler cannot see the free of memory allocated before it
    # started (the running sum would keep them), and on CUDA the peak then starts from the same
    # state.
    for h in case.holders:
        if isinstance(h, torch.nn.Module):
            for p in h.parameters():
                p.grad = None
    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        case.step(*inputs)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(), "cuda_max_memory_allocated"
    start = live_tensor_bytes(case.holders + list(inputs))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        case.step(*inputs)
    high = peak_of_running_sum(cpu_memory_events(prof))
    return start + high, "cpu_tensor_bytes"


def cpu_memory_events(prof):
    """(time, signed bytes) of every CPU allocation (+) and free (−) a profile recorded, read
    from its Chrome trace (torch.profiler's public export; "[memory]" instant events)."""
    fd, path = tempfile.mkstemp(suffix=".json", prefix="cads-torch-trace-")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
    finally:
        os.remove(path)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    out = [(e["ts"], e["args"].get("Ev Idx", 0), e["args"]["Bytes"]) for e in events
           if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0]
    if not out:
        raise RuntimeError("torch.profiler recorded no CPU allocation during the step")
    return [(ts, b) for ts, _, b in sorted(out)]


def peak_of_running_sum(events):
    """The highest value the running sum of the signed sizes reaches, in time order (0 if it
    never rises): the most bytes allocated during the step and not yet freed at one time."""
    live = high = 0
    for _, size in sorted(events, key=lambda e: e[0]):
        live += size
        high = max(high, live)
    return high


def live_tensor_bytes(holders):
    """Bytes of the distinct storages reachable from modules (parameters, their gradients,
    buffers), optimizers (their state), dicts of tensors and tensors."""
    seen, total = set(), 0

    def count(t):
        nonlocal total
        if not torch.is_tensor(t):
            return
        s = t.untyped_storage()
        if s.data_ptr() not in seen and s.nbytes() > 0:
            seen.add(s.data_ptr())
            total += s.nbytes()

    for h in holders:
        if isinstance(h, torch.nn.Module):
            for p in h.parameters():
                count(p)
                count(p.grad)
            for b in h.buffers():
                count(b)
        elif isinstance(h, torch.optim.Optimizer):
            for state in h.state.values():
                for v in state.values():
                    count(v)
        elif isinstance(h, dict):
            for v in h.values():
                count(v)
        else:
            count(h)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--filter", default="", metavar="NAME",
                    help="keep the cases whose op/case contains NAME")
    ap.add_argument("--precision", choices=["f32", "amp", "both"], default="both",
                    help="of the whole-step cases (the op cases are f32)")
    ap.add_argument("--small", action="store_true",
                    help="only the whole-step cases that fit a CPU run (2x16x48x48 encoder, both "
                         "pretrain presets, 2x16x64x64 segment); no op cases")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    adapter = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    common = {"adapter": adapter, "peer": f"torch {torch.__version__}",
              "timer": "cuda-event" if dev == "cuda" else "wall"}
    if dev == "cpu":
        common["threads"] = torch.get_num_threads()
    precisions = ["f32", "amp"] if args.precision == "both" else [args.precision]
    families = [] if args.small else [matmul_cases, conv_cases, attention_cases]
    for family in families:
        for op, case, run, flops in family(dev):
            if args.filter not in f"{op}/{case}":
                continue
            ms = run()
            print(json.dumps({"op": op, "case": case, "ms": round(ms, 4),
                              "gflops": round(flops / ms / 1e6, 2), **common}), flush=True)
    for op, case, run, flops, extra in step_cases(dev, precisions, args.small):
        if args.filter not in f"{op}/{case}":
            continue
        ms, (peak, measure) = run()
        print(json.dumps({"op": op, "case": case, **extra, "ms": round(ms, 4),
                          "gflops": round(flops / ms / 1e6, 2), "peak_bytes": peak,
                          "peak_measure": measure, **common}), flush=True)


if __name__ == "__main__":
    main()
