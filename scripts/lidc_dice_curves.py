#!/usr/bin/env python3
"""Validation Dice per epoch of two `cads segment train` runs, one small panel per class.

usage: lidc_dice_curves.py SCRATCH/metrics.jsonl PRETRAINED/metrics.jsonl OUT.png

Reads the JSON lines the trainer writes (`epoch`, `val_dice` per foreground class, null when a
class is in neither prediction nor reference, `mean_val_dice`) and draws a grid of panels: the
mean first, then each class in the order of `val_dice` (the dataset's label order). In each
panel x runs over the epochs, y from 0 to 1 with grey lines at 0.25, 0.5 and 0.75; the run from
scratch is blue, the run from the pretrained encoder orange; a null Dice leaves a gap.

Panel titles are the class names of the run.json next to the first metrics file, in a 5x7
pixel font; a legend at the bottom left names the two colours. Standard library only
(zlib, struct, json), so it runs on CI's bare python3.
"""
import json
import struct
import sys
import zlib

PANEL_W, PANEL_H, MARGIN, COLS = 240, 160, 12, 4
SCRATCH = (0, 130, 200)
PRETRAINED = (245, 130, 48)
GRID = (215, 215, 215)
FRAME = (0, 0, 0)

# A 5×7 pixel font (rows top to bottom, bit 4 = leftmost column) for the panel titles.
FONT = {
    "A": (0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11), "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E), "D": (0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F), "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "G": (0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F), "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E), "J": (0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11), "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11), "N": (0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "Q": (0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D), "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E), "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "U": (0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "V": (0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "W": (0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A), "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "Y": (0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04), "Z": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F),
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E), "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F), "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02), "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E), "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E), "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    "-": (0, 0, 0, 0x1F, 0, 0, 0), ".": (0, 0, 0, 0, 0, 0x0C, 0x0C), " ": (0,) * 7,
    "_": (0, 0, 0, 0, 0, 0, 0x1F),
}


def read_metrics(path):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    if not rows:
        sys.exit(f"{path}: no epochs")
    rows.sort(key=lambda r: r["epoch"])
    return rows


def series(rows):
    """[mean, class 1, class 2, ...], each a list of Dice values (None for null) per epoch."""
    classes = len(rows[0]["val_dice"])
    out = [[r["mean_val_dice"] for r in rows]]
    for c in range(classes):
        out.append([r["val_dice"][c] for r in rows])
    return out


def class_names(metrics_path, classes):
    """Foreground class names from the run.json next to metrics.jsonl, else class_1, ..."""
    import os
    run = os.path.join(os.path.dirname(metrics_path), "run.json")
    try:
        with open(run) as f:
            names = json.load(f)["class_names"][1:]
        if len(names) == classes:
            return names
    except (OSError, KeyError, ValueError):
        pass
    return [f"class_{c + 1}" for c in range(classes)]


class Canvas:
    def __init__(self, w, h):
        self.w, self.h = w, h
        self.px = bytearray(b"\xff" * (w * h * 3))

    def put(self, x, y, c):
        if 0 <= x < self.w and 0 <= y < self.h:
            i = (y * self.w + x) * 3
            self.px[i:i + 3] = bytes(c)

    def line(self, x0, y0, x1, y1, c, width=2):
        steps = max(1, int(max(abs(x1 - x0), abs(y1 - y0)) + 0.999))
        for s in range(steps + 1):
            t = s / steps
            x, y = round(x0 + t * (x1 - x0)), round(y0 + t * (y1 - y0))
            for dx in range(width):
                for dy in range(width):
                    self.put(x + dx, y + dy, c)

    def text(self, x, y, s, c):
        """Upper-cased `s` in the 5×7 font, top-left at (x, y); unknown characters are blanks."""
        for ch in s.upper():
            for r, bits in enumerate(FONT.get(ch, FONT[" "])):
                for col in range(5):
                    if bits >> (4 - col) & 1:
                        self.put(x + col, y + r, c)
            x += 6

    def png(self):
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3])
                       for y in range(self.h))

        def chunk(kind, data):
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        ihdr = struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def draw_panel(cv, ox, oy, title, runs, epochs):
    x0, y0 = ox + MARGIN, oy + MARGIN
    cv.text(x0 + 4, y0 + 4, title, FRAME)
    w, h = PANEL_W - 2 * MARGIN, PANEL_H - 2 * MARGIN

    def at(e, v):
        x = x0 + (w * e / max(1, epochs - 1))
        y = y0 + h - h * min(1.0, max(0.0, v))
        return x, y

    for g in (0.25, 0.5, 0.75):
        _, y = at(0, g)
        cv.line(x0, y, x0 + w, y, GRID, width=1)
    for a, b in (((x0, y0), (x0 + w, y0)), ((x0, y0 + h), (x0 + w, y0 + h)),
                 ((x0, y0), (x0, y0 + h)), ((x0 + w, y0), (x0 + w, y0 + h))):
        cv.line(*a, *b, FRAME, width=1)
    for values, colour in runs:
        for e in range(1, len(values)):
            if values[e - 1] is not None and values[e] is not None:
                cv.line(*at(e - 1, values[e - 1]), *at(e, values[e]), colour)
        if len(values) == 1 and values[0] is not None:
            cv.line(*at(0, values[0]), *at(0, values[0]), colour, width=3)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    scratch = series(read_metrics(sys.argv[1]))
    pretrained = series(read_metrics(sys.argv[2]))
    if len(scratch) != len(pretrained):
        sys.exit(f"the runs have {len(scratch) - 1} and {len(pretrained) - 1} classes")
    epochs = max(len(scratch[0]), len(pretrained[0]))
    rows = (len(scratch) + COLS - 1) // COLS
    cv = Canvas(COLS * PANEL_W, rows * PANEL_H)
    names = class_names(sys.argv[1], len(scratch) - 1)
    for p in range(len(scratch)):
        ox, oy = (p % COLS) * PANEL_W, (p // COLS) * PANEL_H
        title = "mean" if p == 0 else names[p - 1]
        runs = [(scratch[p], SCRATCH), (pretrained[p], PRETRAINED)]
        draw_panel(cv, ox, oy, title, runs, epochs)
    # The legend under the last panel's frame: blue scratch, orange pretrained.
    cv.text(MARGIN, rows * PANEL_H - MARGIN + 3, "scratch", SCRATCH)
    cv.text(MARGIN + 60, rows * PANEL_H - MARGIN + 3, "pretrained", PRETRAINED)
    with open(sys.argv[3], "wb") as f:
        f.write(cv.png())


if __name__ == "__main__":
    main()
