#!/usr/bin/env python3
"""DiffDRR 0.6.1 against `cads bench` on the DRR cases, in one run, on equal work.

Times DiffDRR on the LIDC chest CT (data/cxr.nii.gz) with the geometry of src/bench/drr.rs
(cone beam, 200×200 pixels of 2 mm, sdd 1020 mm, source 850 mm from the volume centre, poses
drawn within ±3° / ±10 mm), then runs `cads bench --filter drr_` (unless --no-cads) and prints
one JSON line per case with both rates and `ratio_vs_diffdrr` = cads / DiffDRR. Same machine,
same run, so the ratio holds even when the machine is shared (absolute times do not).

Equal work: Siddon is exact in both. DiffDRR's trilinear takes 500 samples per ray over one
α range shared by the batch; cads's trilinear cases sample at that same spacing (computed by
`diffdrr_trilinear_step_mm` in src/bench/drr.rs, printed here as `diffdrr_step_mm`).

Cases (as cads names them):
  drr_fwd/{siddon,trilinear}_200x200           forward, no autograd
  drr_fwd_bwd_pose/{siddon,trilinear}_200x200  forward + backward to the 6 pose parameters
  drr_bwd_volume/{siddon,trilinear}_200x200    the volume gradient alone (DiffDRR: the forward
                                               with the density requiring grad runs untimed, then
                                               autograd's backward is timed)

    pip install diffdrr==0.6.1
    python3 scripts/bench_drr_vs_diffdrr.py [--reps 3] [--threads N] [--only NAME] [--no-cads]
        [--cads CMD]
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from diffdrr.data import read
from diffdrr.drr import DRR

ROOT = Path(__file__).resolve().parent.parent
SIDE = 200


def random_pose(gen):
    rot = (torch.rand(1, 3, generator=gen) * 2 - 1) * (3.0 * torch.pi / 180)
    xyz = (torch.rand(1, 3, generator=gen) * 2 - 1) * 10.0 + torch.tensor([[0.0, 850.0, 0.0]])
    return rot, xyz


def median_ms(fn, reps, warmup=1, make=lambda: ()):
    """Median ms of fn(*make()) over fresh inputs; make() runs untimed."""
    times = []
    for i in range(warmup + reps):
        args = make()
        t0 = time.perf_counter()
        fn(*args)
        ms = (time.perf_counter() - t0) * 1e3
        if i >= warmup:
            times.append(ms)
    return statistics.median(times)


def diffdrr_cases(reps, only):
    subject = read(str(ROOT / "data" / "cxr.nii.gz"), orientation="AP")
    gen = torch.Generator().manual_seed(0)
    out = {}
    for renderer in ("siddon", "trilinear"):
        drr = DRR(subject, sdd=1020.0, height=SIDE, delx=2.0, renderer=renderer)
        render = lambda rot, xyz: drr(rot, xyz, parameterization="euler_angles", convention="ZXY")

        def fwd():
            with torch.no_grad():
                render(*random_pose(gen))

        def fwd_bwd_pose():
            rot, xyz = random_pose(gen)
            rot.requires_grad_(True)
            xyz.requires_grad_(True)
            img = render(rot, xyz)
            img.backward(torch.randn_like(img))

        def volume_forward():
            # untimed: the forward with the density requiring grad, and a fresh upstream grad
            drr.density.requires_grad_(True)
            drr.density.grad = None
            img = render(*random_pose(gen))
            return img, torch.randn_like(img)

        def bwd_volume(img, g):
            img.backward(g)  # autograd's volume gradient alone

        cases = {
            f"drr_fwd/{renderer}_{SIDE}x{SIDE}": lambda: median_ms(fwd, reps),
            f"drr_fwd_bwd_pose/{renderer}_{SIDE}x{SIDE}": lambda: median_ms(fwd_bwd_pose, reps),
            f"drr_bwd_volume/{renderer}_{SIDE}x{SIDE}":
                lambda: median_ms(bwd_volume, reps, make=volume_forward),
        }
        for name, run in cases.items():
            if only in name:
                out[name] = run()
        drr.density.requires_grad_(False)
        print(json.dumps({"peer": "diffdrr", "renderer": renderer, "done": True}), file=sys.stderr, flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-cads", action="store_true", help="time DiffDRR only")
    ap.add_argument("--only", default="", help="DiffDRR cases whose name contains this")
    ap.add_argument("--cads", default="cargo run --release --quiet -- bench --filter drr_",
                    help="the command that prints cads's DRR bench lines")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peer = diffdrr_cases(args.reps, args.only)
    cads = {}
    if not args.no_cads:
        run = subprocess.run(args.cads, shell=True, cwd=ROOT, capture_output=True, text=True)
        for line in run.stdout.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "op" in row and "case" in row:
                cads[f"{row['op']}/{row['case']}"] = row
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
    rays = SIDE * SIDE
    for name, ms in peer.items():
        row = {"case": name, "diffdrr_ms": round(ms, 2),
               "diffdrr_mrays_per_s": round(rays / ms / 1e3, 4),
               "diffdrr": "0.6.1", "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
        if name in cads:
            ours = cads[name]
            row.update(cads_ms=ours["ms"], cads_mrays_per_s=ours.get("mrays_per_s"),
                       ratio_vs_diffdrr=round(ms / ours["ms"], 2), adapter=ours.get("adapter"))
        print(json.dumps(row), flush=True)
    for name, ours in cads.items():
        if name not in peer:
            print(json.dumps({"case": name, "cads_ms": ours["ms"], "note": "no DiffDRR counterpart"}))


if __name__ == "__main__":
    main()
