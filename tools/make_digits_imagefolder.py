#!/usr/bin/env python3
"""Turns scikit-learn's 1,797 labelled 8x8 handwritten digits into an ImageFolder.

The digits ship inside the scikit-learn wheel (`sklearn/datasets/data/digits.csv.gz`:
64 pixel values 0..16 and the label per row). They are written as 8x8 grayscale PNGs
(values scaled to 0..255) under OUT/train/<digit>/ and OUT/val/<digit>/, every fifth
image of each digit held out (1,442 for training, 355 held out), so `smith train --images OUT/train` can train
a CNN on a real dataset on any machine.

Usage: tools/make_digits_imagefolder.py OUT [--wheel scikit_learn-*.whl]
Without --wheel the wheel is fetched with `pip download scikit-learn --no-deps`; nothing
is installed. Only the Python standard library is needed.
"""

import argparse
import glob
import gzip
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib


def png_gray(pixels, width, height):
    """An 8-bit grayscale PNG of `pixels` (row-major bytes)."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes(pixels[y * width:(y + 1) * width]) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def fetch_wheel(folder):
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary", ":all:", "-d", folder, "scikit-learn"], check=True)
    found = glob.glob(os.path.join(folder, "scikit_learn-*.whl"))
    if not found:
        sys.exit("pip did not download a scikit-learn wheel")
    return found[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--wheel", help="a scikit-learn wheel (fetched with pip when absent)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(tmp)
        with zipfile.ZipFile(wheel) as z:
            text = gzip.decompress(z.read("sklearn/datasets/data/digits.csv.gz")).decode()
    rows = [list(map(int, line.split(","))) for line in text.strip().splitlines()]
    if len(rows) != 1797 or any(len(r) != 65 for r in rows):
        sys.exit(f"unexpected digits file: {len(rows)} rows")
    seen = [0] * 10
    counts = {"train": 0, "val": 0}
    for i, row in enumerate(rows):
        label = row[64]
        split = "val" if seen[label] % 5 == 4 else "train"
        seen[label] += 1
        folder = os.path.join(args.out, split, str(label))
        os.makedirs(folder, exist_ok=True)
        pixels = [v * 255 // 16 for v in row[:64]]
        with open(os.path.join(folder, f"{i:04d}.png"), "wb") as f:
            f.write(png_gray(pixels, 8, 8))
        counts[split] += 1
    print(f"{args.out}: {counts['train']} training and {counts['val']} held-out images of 10 digits")


if __name__ == "__main__":
    main()
