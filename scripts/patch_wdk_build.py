#!/usr/bin/env python3
"""Make a Linux-host-buildable copy of wdk-build 0.6.0 (cross-build helper).

wdk-build refuses to compile on a non-Windows host: it depends on the
`windows` crate unconditionally, reads the registry to find the WDK, has
`compile_error!` stubs for `set_var`/`remove_var` off Windows, and calls
`std::os::windows::fs::symlink_file`. cargo builds build-dependencies for the
host, so the Linux cross-build (scripts/cross-build.sh) points cargo at a copy
of the crate with exactly these spots edited, through
`--config 'patch.crates-io.wdk-build.path="<copy>"'`. Cargo.toml is never
touched, and a Windows build keeps using the crates.io original.

Every edit names the exact text it expects and the number of times it must
occur; if the source does not look exactly like wdk-build 0.6.0 the script
stops instead of producing a half-patched crate.

Usage: patch_wdk_build.py SOURCE_DIR DEST_DIR
"""

import hashlib
import pathlib
import shutil
import sys

EXPECTED_VERSION = "0.6.0"

# The edits, per file: (old text, new text, expected number of occurrences).
EDITS = {
    "Cargo.toml": [
        # The `windows` crate is only needed for the registry look-up; keep it
        # a dependency on Windows hosts only.
        (
            "[dependencies.windows]\n",
            "[target.'cfg(windows)'.dependencies.windows]\n",
            1,
        ),
    ],
    "src/utils.rs": [
        (
            "    ffi::{CStr, OsStr},\n",
            "    ffi::OsStr,\n",
            1,
        ),
        (
            "use windows::{\n",
            "#[cfg(windows)]\nuse std::ffi::CStr;\n\n#[cfg(windows)]\nuse windows::{\n",
            1,
        ),
        # The two registry fall-backs of `detect_wdk_content_root` (the
        # cross-build always sets WDKContentRoot).
        (
            "    if let Some(path) = read_registry_key_string_value(\n",
            "    #[cfg(windows)]\n    if let Some(path) = read_registry_key_string_value(\n",
            2,
        ),
        (
            "fn read_registry_key_string_value(\n",
            "#[cfg(windows)]\nfn read_registry_key_string_value(\n",
            1,
        ),
        # Make the real set_var/remove_var the only ones (they are called by
        # the cargo-make helpers, which are compiled but not used here).
        (
            '#[cfg(target_os = "windows")]\npub fn set_var<',
            "pub fn set_var<",
            1,
        ),
        (
            '#[cfg(target_os = "windows")]\npub fn remove_var<',
            "pub fn remove_var<",
            1,
        ),
        (
            '#[cfg(not(target_os = "windows"))]\npub fn set_var<',
            "#[cfg(any())]\npub fn set_var<",
            1,
        ),
        (
            '#[cfg(not(target_os = "windows"))]\npub fn remove_var<',
            "#[cfg(any())]\npub fn remove_var<",
            1,
        ),
    ],
    "src/cargo_make.rs": [
        (
            "std::os::windows::fs::symlink_file(",
            "symlink_file_on_host(",
            2,
        ),
    ],
}

# Appended to src/cargo_make.rs: the symlink call used above, per host.
CARGO_MAKE_APPENDIX = """
/// Creates a file symlink with the host's API (added by the avscap
/// cross-build's patch of wdk-build).
#[cfg(windows)]
fn symlink_file_on_host<P: AsRef<Path>, Q: AsRef<Path>>(
    original: P,
    link: Q,
) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(original, link)
}

/// Creates a file symlink with the host's API (added by the avscap
/// cross-build's patch of wdk-build).
#[cfg(unix)]
fn symlink_file_on_host<P: AsRef<Path>, Q: AsRef<Path>>(
    original: P,
    link: Q,
) -> std::io::Result<()> {
    std::os::unix::fs::symlink(original, link)
}
"""

MARKER = ".avscap-linux-host-patch"


def fail(message: str) -> "None":
    print(f"patch_wdk_build.py: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    if len(sys.argv) != 3:
        fail("usage: patch_wdk_build.py SOURCE_DIR DEST_DIR")
    source = pathlib.Path(sys.argv[1])
    dest = pathlib.Path(sys.argv[2])

    # Rerun guard: leave an up-to-date copy alone, so cargo's mtime-based
    # fingerprints of the path dependency stay valid and nothing rebuilds.
    stamp = "wdk-build {} patched for a Linux host; patcher sha256 {}\n".format(
        EXPECTED_VERSION, hashlib.sha256(pathlib.Path(__file__).read_bytes()).hexdigest()
    )
    marker = dest / MARKER
    if marker.is_file() and marker.read_text(encoding="utf-8") == stamp:
        return

    manifest = (source / "Cargo.toml").read_text(encoding="utf-8")
    if f'\nname = "wdk-build"\nversion = "{EXPECTED_VERSION}"\n' not in manifest:
        fail(f"{source} is not wdk-build {EXPECTED_VERSION}; the edits are tied to that version")

    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)

    for relative, edits in EDITS.items():
        path = tmp / relative
        raw = path.read_bytes().decode("utf-8")
        # Some files of the published crate use CRLF: edit in LF, write back
        # with the file's own line ending.
        crlf = "\r\n" in raw
        text = raw.replace("\r\n", "\n")
        for old, new, count in edits:
            found = text.count(old)
            if found != count:
                fail(f"{relative}: expected {count} occurrence(s) of {old!r}, found {found}")
            text = text.replace(old, new)
        if relative == "src/cargo_make.rs":
            text += CARGO_MAKE_APPENDIX
        if crlf:
            text = text.replace("\n", "\r\n")
        path.write_bytes(text.encode("utf-8"))

    (tmp / MARKER).write_text(stamp, encoding="utf-8")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


if __name__ == "__main__":
    main()
