#!/usr/bin/env python3
"""Turn an .inx into an .inf the way the WDK's stampinf does, for the parts
avscap uses: `$ARCH$` becomes the architecture, and the [Version] section
gets `DriverVer = <mm/dd/yyyy>,<version>` (an existing DriverVer line there
is replaced, otherwise one is added at the end of the section).

Usage: stampinf.py INX INF ARCH DATE VERSION
  DATE is mm/dd/yyyy, VERSION has four numeric parts (e.g. 0.1.0.0).
"""

import re
import sys


def main() -> int:
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    inx, inf, arch, date, version = sys.argv[1:]
    if not re.fullmatch(r"\d\d/\d\d/\d{4}", date):
        print(f"stampinf.py: bad date {date!r} (want mm/dd/yyyy)", file=sys.stderr)
        return 2
    if not re.fullmatch(r"\d+\.\d+\.\d+\.\d+", version):
        print(f"stampinf.py: bad version {version!r} (want a.b.c.d)", file=sys.stderr)
        return 2

    with open(inx, "rb") as f:
        raw = f.read()
    # INF files are UTF-8 (with or without BOM) or UTF-16LE with a BOM.
    if raw.startswith(b"\xff\xfe"):
        encoding, bom = "utf-16-le", b"\xff\xfe"
    elif raw.startswith(b"\xef\xbb\xbf"):
        encoding, bom = "utf-8", b"\xef\xbb\xbf"
    else:
        encoding, bom = "utf-8", b""
    text = raw[len(bom) :].decode(encoding)
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.replace("\r\n", "\n").split("\n")

    driver_ver = f"DriverVer = {date},{version}"
    out = []
    section = None
    version_end = None  # index in `out` after the last non-blank [Version] line
    stamped = False
    for line in lines:
        line = line.replace("$ARCH$", arch)
        header = re.fullmatch(r"\s*\[([^\]]+)\]\s*(;.*)?", line)
        if header:
            section = header.group(1).strip().lower()
        elif section == "version" and re.match(r"\s*DriverVer\s*=", line, re.IGNORECASE):
            line = driver_ver
            stamped = True
        out.append(line)
        if section == "version" and line.strip():
            version_end = len(out)
    if not stamped:
        if version_end is None:
            print(f"stampinf.py: {inx} has no [Version] section", file=sys.stderr)
            return 1
        out.insert(version_end, driver_ver)

    with open(inf, "wb") as f:
        f.write(bom + newline.join(out).encode(encoding))
    return 0


if __name__ == "__main__":
    sys.exit(main())
