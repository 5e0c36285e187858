#!/usr/bin/env python3
"""Golden values of cubic B-spline resampling, computed by scipy, for tests/segment_cubic.rs.

    python3 scripts/make_cubic_golden.py [tests/data/cubic_golden.json]

Needs numpy and scipy (run by hand, not by CI; the output is committed). The input is a
[D, H, W] = [5, 6, 7] array with v(d, h, w) = sin(0.9 d + 0.37 h²) + 0.1 w (both sides compute
it); the output grid is [7, 4, 9] with output voxel m reading input coordinate m · ratio per
axis, ratio = (0.6, 1.5, 0.7), which is what segment::cubic::resample_patch_cubic computes.
scipy's map_coordinates(order=3, mode="mirror") prefilters with the same mirror boundary, so
the two must agree to float rounding.
"""
import json
import sys

import numpy as np
from scipy import ndimage

SHAPE = (5, 6, 7)
OUT = (7, 4, 9)
RATIO = (0.6, 1.5, 0.7)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/data/cubic_golden.json"
    d, h, w = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE], indexing="ij")
    v = np.sin(0.9 * d + 0.37 * h * h) + 0.1 * w
    grids = np.meshgrid(*[np.arange(n) * r for n, r in zip(OUT, RATIO)], indexing="ij")
    out = ndimage.map_coordinates(v, grids, order=3, mode="mirror")
    with open(path, "w") as f:
        json.dump({"shape": SHAPE, "out_shape": OUT, "ratio": RATIO,
                   "scipy": __import__("scipy").__version__,
                   "values": [round(float(x), 12) for x in out.ravel()]}, f)
    print(f"{path}: {out.size} values")


if __name__ == "__main__":
    main()
