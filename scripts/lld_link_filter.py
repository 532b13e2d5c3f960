#!/usr/bin/env python3
"""Linker front-end for the Linux cross-build: lld-link minus two flags.

wdk-build asks the linker for `/KERNEL` and `/MAPINFO:EXPORTS`. MSVC's
link.exe knows both; lld-link 14 knows neither and, on a Linux host, takes
them for input file names and fails. Neither changes the image lld-link
would produce for a Rust driver (/KERNEL only checks that objects were
compiled with /kernel, /MAPINFO only adds to the .map file), so this
wrapper drops them, from the command line and from any `@response` file
(rustc switches to one when a command line gets long; for MSVC-style
linkers it writes UTF-16LE with a byte-order mark, one quoted argument per
line), and runs lld-link with the rest unchanged.

scripts/cross-build.sh sets it as the linker of the x86_64-pc-windows-msvc
target. LLD_LINK overrides the lld-link executable.
"""

import os
import subprocess
import sys
import tempfile

DROPPED = {"KERNEL", "MAPINFO:EXPORTS"}


def is_dropped(arg: str) -> bool:
    """True for /KERNEL or /MAPINFO:EXPORTS, in any case, with / or -."""
    arg = arg.strip()
    if len(arg) >= 2 and arg[0] == '"' and arg[-1] == '"':
        arg = arg[1:-1]
    return len(arg) > 1 and arg[0] in "/-" and arg[1:].upper() in DROPPED


def filter_response_file(path: str, workdir: str, index: int) -> str:
    """Writes a copy of response file `path` without the dropped flags, in
    the encoding it came in, and returns the copy's path."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(b"\xff\xfe"):
        encoding, bom, text = "utf-16-le", b"\xff\xfe", raw[2:].decode("utf-16-le")
    elif raw.startswith(b"\xef\xbb\xbf"):
        encoding, bom, text = "utf-8", b"\xef\xbb\xbf", raw[3:].decode("utf-8")
    else:
        encoding, bom, text = "utf-8", b"", raw.decode("utf-8")
    kept = [line for line in text.splitlines() if not is_dropped(line)]
    out = os.path.join(workdir, f"linker-arguments-{index}")
    with open(out, "wb") as f:
        f.write(bom + ("\n".join(kept) + "\n").encode(encoding))
    return out


def main() -> int:
    lld_link = os.environ.get("LLD_LINK", "lld-link")
    with tempfile.TemporaryDirectory(prefix="avscap-lld-link-") as workdir:
        args = []
        for index, arg in enumerate(sys.argv[1:]):
            if arg.startswith("@") and os.path.isfile(arg[1:]):
                args.append("@" + filter_response_file(arg[1:], workdir, index))
            elif not is_dropped(arg):
                args.append(arg)
        # Run (not exec) so the temporary directory outlives lld-link.
        return subprocess.call([lld_link, *args])


if __name__ == "__main__":
    sys.exit(main())
