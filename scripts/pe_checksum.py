#!/usr/bin/env python3
"""Compute, write or verify the CheckSum field of a PE image.

Windows verifies the optional header's CheckSum of every driver it loads;
lld-link 14 leaves it at 0. The algorithm is the public one used by
imagehlp's CheckSumMappedFile: add the image up as little-endian 16-bit
words with end-around carry, counting the CheckSum field itself as zero,
fold to 16 bits, then add the file length.

Usage:
  pe_checksum.py compute FILE   print the stored and computed checksums
  pe_checksum.py fix FILE       write the computed checksum into FILE
  pe_checksum.py verify FILE    exit 1 unless the stored checksum is non-zero
                                and equals the computed one
"""

import struct
import sys

# Offset of CheckSum inside the optional header, for PE32 and PE32+ alike.
CHECKSUM_OFFSET_IN_OPTIONAL_HEADER = 64


def checksum_field_offset(image: bytes) -> int:
    """File offset of the optional header's CheckSum, after sanity checks."""
    if len(image) < 64 or image[:2] != b"MZ":
        raise ValueError("not an MZ/PE image")
    (pe_offset,) = struct.unpack_from("<I", image, 0x3C)
    if image[pe_offset : pe_offset + 4] != b"PE\0\0":
        raise ValueError("PE signature not found")
    optional_header = pe_offset + 4 + 20
    (magic,) = struct.unpack_from("<H", image, optional_header)
    if magic not in (0x10B, 0x20B):
        raise ValueError(f"unknown optional header magic {magic:#x}")
    offset = optional_header + CHECKSUM_OFFSET_IN_OPTIONAL_HEADER
    if offset + 4 > len(image):
        raise ValueError("image truncated before the CheckSum field")
    return offset


def compute(image: bytes) -> int:
    """The PE checksum of `image`, ignoring whatever CheckSum holds now."""
    offset = checksum_field_offset(image)
    data = bytearray(image)
    data[offset : offset + 4] = b"\0\0\0\0"
    if len(data) % 2:
        data.append(0)
    # One's-complement sum of the 16-bit words: summing everything first and
    # folding the carries at the end gives the same result as folding after
    # every addition.
    total = sum(struct.unpack(f"<{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return (total + len(image)) & 0xFFFFFFFF


def stored(image: bytes) -> int:
    (value,) = struct.unpack_from("<I", image, checksum_field_offset(image))
    return value


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("compute", "fix", "verify"):
        print(__doc__, file=sys.stderr)
        return 2
    command, path = sys.argv[1], sys.argv[2]
    with open(path, "rb") as f:
        image = f.read()
    try:
        computed = compute(image)
        current = stored(image)
    except ValueError as error:
        print(f"pe_checksum.py: {path}: {error}", file=sys.stderr)
        return 1

    if command == "compute":
        print(f"stored {current:#010x} computed {computed:#010x}")
        return 0
    if command == "fix":
        if current != computed:
            with open(path, "r+b") as f:
                f.seek(checksum_field_offset(image))
                f.write(struct.pack("<I", computed))
        print(f"{path}: CheckSum {computed:#010x}")
        return 0
    # verify
    if current == 0:
        print(f"pe_checksum.py: {path}: CheckSum is 0 (never filled in)", file=sys.stderr)
        return 1
    if current != computed:
        print(
            f"pe_checksum.py: {path}: CheckSum {current:#010x} does not match the computed "
            f"{computed:#010x}",
            file=sys.stderr,
        )
        return 1
    print(f"{path}: CheckSum {current:#010x} verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
