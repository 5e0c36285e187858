#!/usr/bin/env python3
"""Golden values of torch.amp.GradScaler for tests/loss_scale.rs, from torch itself (on the CPU).

    python3 scripts/make_loss_scale_golden.py [tests/data/loss_scale_golden.json]

Needs torch (run by hand, not by CI; the output is committed). For each config, a scripted series
of steps whose gradients are finite or hold an inf / NaN: the backward of the scaled loss
S·Σ p·w (w holds the inf / NaN), then `scaler.step(AdamW)` and `scaler.update()`. After every step it
records the scale (f32 bits), the growth tracker and AdamW's step count of the parameter (0 while
it has no state): a skipped step must leave that count alone; and the parameter itself. A second part records torch's
unscale of a few values at scales that are not powers of two (f32 bits in and out).
"""
import json
import struct
import sys

import torch

# (init_scale, growth_factor, backoff_factor, growth_interval, w's factor, per step: f finite,
# i an inf in w, n a NaN in w). A finite w can still overflow S·w: `found_inf` records torch's.
CONFIGS = [
    # torch's factors with a short interval: growth, backoff, growth again.
    (2.0**16, 2.0, 0.5, 3, 1.0, "ffffiffffffinfffffff"),
    # Factors that are not powers of two, a scale that is not either: f64 products rounded once.
    (1000.0, 1.7, 0.3, 2, 1.0, "fffiffiiffffnffff"),
    # First step skipped (no AdamW state made), then growth at every step up to f32's range,
    # which the scale must not pass (w small enough that S·w stays finite).
    (2.0**120, 4.0, 0.5, 1, 2.0**-100, "iffffffn"),
    # The same with w = O(1): the growing scale makes S·w overflow, and the scaler backs off.
    (2.0**120, 4.0, 0.5, 1, 1.0, "ifffffff"),
]

UNSCALE_SCALES = [1000.0, 3.0, 2.0**16, 0.75]
UNSCALE_VALUES = [1.5, -2250.0, 7.0e-3, 123456.789, -0.0, 3.0e30]


def bits(x):
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


def run(init, growth, backoff, interval, w_factor, script):
    scaler = torch.amp.GradScaler("cpu", init_scale=init, growth_factor=growth,
                                  backoff_factor=backoff, growth_interval=interval)
    p = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
    opt = torch.optim.AdamW([p], lr=1e-3, foreach=False)
    rows = []
    for k, c in enumerate(script):
        w = torch.tensor([0.25 + k, -0.5, 1.0]) * w_factor
        if c == "i":
            w[1] = float("inf")
        elif c == "n":
            w[2] = float("nan")
        opt.zero_grad()
        scaler.scale((p * w).sum()).backward()
        scaler.step(opt)
        found = scaler._found_inf_per_device(opt)
        found_inf = sum(float(v) for v in found.values()) > 0
        scaler.update()
        step = int(opt.state[p]["step"]) if p in opt.state else 0
        rows.append({"injected": c, "found_inf": found_inf, "scale_bits": bits(scaler.get_scale()),
                     "growth_tracker": scaler._get_growth_tracker(), "adamw_step": step,
                     "param": p.detach().tolist()})
    return {"init_scale": init, "growth_factor": growth, "backoff_factor": backoff,
            "growth_interval": interval, "w_factor": w_factor, "steps": rows}


def unscale_cases():
    out = []
    for s in UNSCALE_SCALES:
        g = torch.tensor(UNSCALE_VALUES, dtype=torch.float32)
        found_inf = torch.zeros(())
        inv = torch.full((), s, dtype=torch.float32).double().reciprocal().float()
        torch._amp_foreach_non_finite_check_and_unscale_([g], found_inf, inv)
        out.append({"scale": s, "in_bits": [bits(v) for v in UNSCALE_VALUES],
                    "out_bits": [bits(v) for v in g.tolist()], "found_inf": bool(found_inf)})
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/data/loss_scale_golden.json"
    data = {"torch": torch.__version__,
            "sequences": [run(*c) for c in CONFIGS],
            "unscale": unscale_cases()}
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    print(f"{path}: {len(CONFIGS)} sequences, {len(UNSCALE_SCALES)} unscale cases")


if __name__ == "__main__":
    main()
