#!/usr/bin/env python3
"""Checks a YUV4MPEG2 file written by the host simulator (a test tool, not
part of the driver): the header names the expected size, rate and 4:2:0
colour space, and the file holds exactly the expected number of whole
frames and nothing else."""
import argparse
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("file")
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--fps", type=int, required=True)
    ap.add_argument("--frames", type=int, required=True)
    a = ap.parse_args()

    data = open(a.file, "rb").read()
    end = data.find(b"\n")
    if end < 0:
        print(f"{a.file}: no header line", file=sys.stderr)
        return 1
    fields = data[:end].split(b" ")
    if fields[0] != b"YUV4MPEG2":
        print(f"{a.file}: not YUV4MPEG2: {fields[0]!r}", file=sys.stderr)
        return 1
    params = {f[:1]: f[1:] for f in fields[1:]}
    want = {b"W": str(a.width).encode(), b"H": str(a.height).encode(), b"F": f"{a.fps}:1".encode()}
    for key, value in want.items():
        if params.get(key) != value:
            print(f"{a.file}: header {key.decode()}={params.get(key)!r}, expected {value!r}", file=sys.stderr)
            return 1
    colour = params.get(b"C", b"420")
    if not colour.startswith(b"420"):
        print(f"{a.file}: colour space {colour!r} is not 4:2:0", file=sys.stderr)
        return 1

    frame_bytes = a.width * a.height * 3 // 2
    pos, count = end + 1, 0
    while pos < len(data):
        line_end = data.find(b"\n", pos)
        if line_end < 0 or not data[pos:line_end].startswith(b"FRAME"):
            print(f"{a.file}: frame {count}: bad frame header at byte {pos}", file=sys.stderr)
            return 1
        pos = line_end + 1 + frame_bytes
        if pos > len(data):
            print(f"{a.file}: frame {count} is truncated", file=sys.stderr)
            return 1
        count += 1
    if count != a.frames:
        print(f"{a.file}: {count} frames, expected {a.frames}", file=sys.stderr)
        return 1
    print(f"{a.file}: {count} frames of {a.width}x{a.height} 4:2:0 at {a.fps} fps: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
