#!/usr/bin/env python3
"""Write small NIfTI-1 files with unusual qform/sform headers, and the affine nibabel reads from
each, for tests/hostile.rs (issue 15, item 3). nibabel is the reference: it takes |pixdim[1..3]|
in the qform (handedness from qfac = pixdim[0] only) and ignores an invalid sform/qform code.

Run: pip install nibabel numpy && python3 scripts/make_nibabel_orientation.py
Output (committed, a few hundred bytes each): tests/data/nibabel/*.nii and expected.json.
CI has no nibabel; the Rust test reads the committed files.
"""
import json
import os

import nibabel as nib
import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "nibabel")


def write(name, pixdim, qform_code, sform_code, quatern=(0.0, 0.0, 0.0), offset=(1.0, 2.0, 3.0), srow=None):
    data = (np.arange(4 * 3 * 2, dtype=np.int16) * 7 - 50).reshape((4, 3, 2), order="F")
    img = nib.Nifti1Image(data, affine=None)
    h = img.header
    h["pixdim"][0:4] = pixdim
    h["qform_code"] = qform_code
    h["sform_code"] = sform_code
    h["quatern_b"], h["quatern_c"], h["quatern_d"] = quatern
    h["qoffset_x"], h["qoffset_y"], h["qoffset_z"] = offset
    if srow is not None:
        h["srow_x"], h["srow_y"], h["srow_z"] = srow
    path = os.path.join(OUT, name)
    # Write the header bytes as set (nibabel's to_filename would recompute qform/sform from an
    # affine); the data follow at vox_offset 352.
    h["vox_offset"] = 352
    with open(path, "wb") as f:
        f.write(h.binaryblock)
        f.write(b"\0" * (352 - len(h.binaryblock)))
        f.write(data.tobytes(order="F"))
    # What nibabel reads (with its header checks and fixes, as a user's nib.load would).
    loaded = nib.load(path)
    return {"file": name, "affine": loaded.affine.tolist()}


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = [
        # Negative pixdim[1] with a qform: nibabel/nifti1_io read RAS (|dx|), not LAS.
        write("qform_neg_pixdim1.nii", [1.0, -2.0, 3.0, 4.0], 1, 0),
        # Negative pixdim[2] and [3] with a rotation and qfac = -1.
        write("qform_neg_pixdim23_qfac.nii", [-1.0, 1.5, -2.5, -3.5], 1, 0, quatern=(0.1, 0.2, 0.3)),
        # qfac = -1 alone flips the third axis.
        write("qform_qfac.nii", [-1.0, 1.0, 2.0, 3.0], 2, 0),
        # An invalid sform_code (256) with a valid qform: the sform is ignored.
        write(
            "sform_code_invalid.nii",
            [1.0, 2.0, 2.0, 2.0],
            1,
            256,
            srow=([-9.0, 0.0, 0.0, 10.0], [0.0, 9.0, 0.0, 20.0], [0.0, 0.0, 9.0, 30.0]),
        ),
        # A valid sform wins over the qform.
        write(
            "sform_valid.nii",
            [1.0, 2.0, 2.0, 2.0],
            1,
            2,
            srow=([-3.0, 0.0, 0.0, 10.0], [0.0, 3.0, 0.0, 20.0], [0.0, 0.0, 3.0, 30.0]),
        ),
    ]
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"nibabel": nib.__version__, "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
