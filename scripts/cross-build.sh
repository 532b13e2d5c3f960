#!/usr/bin/env bash
# cross-build.sh: builds the real avscap.sys (x86_64 Windows kernel driver) on
# a Linux host, then checks it.
#
# This is a compile-and-link check of the driver, not a production build:
# the WDK is replaced by a synthetic one made of mingw-w64's headers and
# import libraries, so struct layouts come from mingw-w64 (the KS structures
# are reshaped to the WDK's by scripts/wdk_shape_headers.py and asserted in
# src/kernel/bindings.rs), and the image is unsigned. The recipe and the
# reason for every step are in the team's cross-build-notes.md ("walls"
# 1-11, referred to below).
#
# Usage: scripts/cross-build.sh [--out-dir DIR] [--no-install] [--clean] [--clippy]
#   --out-dir DIR  where avscap.sys (and avscap.inf) go; default
#                  target/cross/package
#   --no-install   never call apt-get/rustup; fail if something is missing
#   --clean        delete target/cross first (a from-scratch run)
#   --clippy       also run cargo clippy -D warnings on the kernel build
#
# Runs on a fresh Debian 12 as root: installs what is missing (apt packages
# mingw-w64-x86-64-dev lld clang libclang-dev llvm python3, and the rustup
# target x86_64-pc-windows-msvc; rustup itself must be there). Everything it
# generates lives under target/cross/; Cargo.toml and Cargo.lock are left as
# they were. Reruns only redo what changed.
#
# Steps: (1) tools; (2) a copy of wdk-build 0.6.0 patched for a Linux host,
# given to cargo as [patch.crates-io] through --config; (3) the synthetic WDK
# root (WDKContentRoot): Include/<ver>/{km,km/crt,shared} over mingw-w64's
# headers plus an ntddk.h compat wrapper and the WDK-shaped ks.h/ksmedia.h,
# and Lib/<ver>/km/x64 with import libraries made by llvm-dlltool from .def
# files; (4) cargo build --release --target x86_64-pc-windows-msvc
# --features kernel, with a linker wrapper and +crt-static for that target
# only; (5) PE checksum, copy to <out-dir>/avscap.sys, the linker map (the
# /MAP wdk-build asks lld-link for) to <out-dir>/avscap.map (the emulated
# kernel, tests/kernel-emu, names the driver's functions and measures their
# coverage with it), INF from inf/avscap.inx if present; (6)
# scripts/check-sys.sh against scripts/expected-imports.txt.
set -euo pipefail

readonly TARGET=x86_64-pc-windows-msvc
# Any four-part version starting with 10. satisfies wdk-build.
readonly WDK_VERSION=10.0.22621.0
readonly WDK_BUILD_VERSION=0.6.0
readonly APT_PACKAGES=(mingw-w64-x86-64-dev lld clang libclang-dev llvm python3)
readonly MINGW_PREFIX=/usr/x86_64-w64-mingw32

scripts=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$scripts/.." && pwd)
cross="$root/target/cross"
out_dir="$cross/package"
install=1
clean=0
clippy=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --out-dir) out_dir=$2; shift 2 ;;
        --out-dir=*) out_dir=${1#--out-dir=}; shift ;;
        --no-install) install=0; shift ;;
        --clean) clean=1; shift ;;
        --clippy) clippy=1; shift ;;
        -h|--help) sed -n '2,37p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "cross-build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'cross-build.sh: %s\n' "$*" >&2; exit 1; }
started=$SECONDS

# Writes stdin to $1 only if the content differs, so that unchanged inputs
# keep their mtimes (cargo's rerun checks and make-style checks below).
write_if_changed() {
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    cat >"$tmp"
    chmod 644 "$tmp"
    if [[ -f "$1" ]] && cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$1"
    fi
}

if [[ $clean -eq 1 ]]; then
    step "Removing $cross"
    rm -rf "$cross"
fi
mkdir -p "$cross"

# ---------------------------------------------------------------------------
step "1. Tools"
missing=()
[[ -f "$MINGW_PREFIX/include/ks.h" && -f "$MINGW_PREFIX/lib/libntoskrnl.a" ]] \
    || missing+=(mingw-w64-x86-64-dev)
command -v lld-link >/dev/null || missing+=(lld)
command -v clang >/dev/null || missing+=(clang)
compgen -G '/usr/lib/llvm-*/lib/libclang.so' >/dev/null || missing+=(libclang-dev)
for tool in llvm-nm llvm-dlltool llvm-readobj; do
    command -v "$tool" >/dev/null || { missing+=(llvm); break; }
done
command -v python3 >/dev/null || missing+=(python3)
if [[ ${#missing[@]} -gt 0 ]]; then
    [[ $install -eq 1 ]] || die "missing packages: ${missing[*]} (rerun without --no-install, or apt-get install them)"
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
        sudo=(sudo)
    fi
    echo "installing: ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${APT_PACKAGES[@]}" >/dev/null
fi
command -v cargo >/dev/null || die "cargo not found (install Rust with rustup first)"
if ! rustc --print target-libdir --target "$TARGET" 2>/dev/null | xargs -I{} test -d {}; then
    [[ $install -eq 1 ]] || die "Rust target $TARGET missing (rustup target add $TARGET)"
    command -v rustup >/dev/null || die "Rust target $TARGET missing and rustup not found"
    rustup target add "$TARGET"
fi

# libclang for bindgen, and the clang resource directory of the same LLVM
# release (its intrinsics headers; wall 4).
libclang_dir=$(dirname "$(readlink -f "$(compgen -G '/usr/lib/llvm-*/lib/libclang.so' | sort -V | tail -1)")")
clang_resource_dir=$(compgen -G "$libclang_dir/clang/*/include" | sort -V | tail -1 || true)
clang_resource_dir=${clang_resource_dir%/include}
[[ -n "$clang_resource_dir" ]] || clang_resource_dir=$(clang -print-resource-dir)
mingw_include="$MINGW_PREFIX/include"
mingw_lib="$MINGW_PREFIX/lib"

# ---------------------------------------------------------------------------
step "2. wdk-build $WDK_BUILD_VERSION patched for a Linux host (wall 1)"
# `cargo fetch` puts every locked crate's source into the registry; then
# cargo metadata says where wdk-build's is.
(cd "$root" && cargo fetch --quiet)
wdk_build_src=$(cd "$root" && cargo metadata --format-version 1 --features kernel 2>/dev/null | python3 -c '
import json, os, sys
version = sys.argv[1]
for package in json.load(sys.stdin)["packages"]:
    if package["name"] == "wdk-build" and package["version"] == version \
            and (package["source"] or "").startswith("registry+"):
        print(os.path.dirname(package["manifest_path"]))
        break
' "$WDK_BUILD_VERSION")
[[ -n "$wdk_build_src" && -f "$wdk_build_src/Cargo.toml" ]] \
    || die "wdk-build $WDK_BUILD_VERSION not found in the cargo registry (is it still pinned in Cargo.toml?)"
wdk_build_patched="$cross/wdk-build"
python3 "$scripts/patch_wdk_build.py" "$wdk_build_src" "$wdk_build_patched"

# ---------------------------------------------------------------------------
step "3. Synthetic WDK root (walls 2, 3, 5, 6, 11)"
wdk_root="$cross/wdk"
include="$wdk_root/Include/$WDK_VERSION"
libdir="$wdk_root/Lib/$WDK_VERSION/km/x64"
# Links are (re)made and generated headers rewritten only when their content
# changes: cargo follows the links, so unchanged inputs keep their mtimes and
# nothing downstream (wdk-sys's bindings, ours) is regenerated on a rerun.
mkdir -p "$include/km/crt"
# km/crt: everything in mingw-w64's include folder except ks.h and ksmedia.h,
# which km/ serves in the WDK's shape (km/crt comes first in wdk-build's
# include order, so the originals must not be visible there).
find "$mingw_include" -mindepth 1 -maxdepth 1 ! -name ks.h ! -name ksmedia.h \
    -exec ln -sfn -t "$include/km/crt" {} +
ln -sfn km/crt "$include/shared"
# km: mingw-w64's DDK headers, one link each, except ntddk.h (wrapped below).
find "$mingw_include/ddk" -mindepth 1 -maxdepth 1 ! -name ntddk.h \
    -exec ln -sfn -t "$include/km" {} +
# Wall 3: mingw-w64 10 lacks POOL_FLAGS and ExAllocatePool2 (wdk-sys and
# wdk-alloc need them). POOL_FLAG_* values are left to wdk-sys.
write_if_changed "$include/km/avscap_wdk_compat.h" <<'EOF'
/* Synthetic WDK root of the avscap Linux cross-build: declarations the
 * current WDK has and mingw-w64 10 lacks. */
#ifndef AVSCAP_WDK_COMPAT_H
#define AVSCAP_WDK_COMPAT_H
#ifndef POOL_FLAG_NON_PAGED
typedef ULONG64 POOL_FLAGS;
NTKERNELAPI PVOID NTAPI ExAllocatePool2(POOL_FLAGS Flags, SIZE_T NumberOfBytes, ULONG Tag);
#endif
#endif
EOF
write_if_changed "$include/km/ntddk.h" <<'EOF'
/* Synthetic WDK root of the avscap Linux cross-build: mingw-w64's ntddk.h
 * followed by what the current WDK's ntddk.h declares in addition. */
#include <ddk/ntddk.h>
#include "avscap_wdk_compat.h"
EOF
# The WDK's kernel-mode COM header is km/unknown.h (AVStream drivers include
# it before ks.h to get IKsReferenceClock and KsPinGetReferenceClockInterface);
# mingw-w64 ships the same declarations as ddk/punknown.h.
write_if_changed "$include/km/unknown.h" <<'EOF'
/* Synthetic WDK root of the avscap Linux cross-build: the WDK's unknown.h
 * (kernel-mode IUnknown), served by mingw-w64's equivalent. */
#include <ddk/punknown.h>
EOF
# Wall 11: ks.h and ksmedia.h in the WDK's shape (anonymous unions around
# FileAlignment / Reserved1 / Reserved3-4, KSDEVICE_DESCRIPTOR.Flags).
python3 "$scripts/wdk_shape_headers.py" "$mingw_include" "$include/km"

# Wall 6: import libraries. The exports of each DLL come from mingw-w64's
# GNU import archive (`__imp_X` with a thunk `X` is a function, `__imp_X`
# alone is data), plus the few the current WDK has and mingw-w64 10 lacks.
mkdir -p "$libdir"
extra_exports() {
    case "$1" in
        # ExAllocatePool2 and MmAllocateContiguousNodeMemory are missing
        # from mingw-w64's import library (ntoskrnl exports both: the
        # latter since Windows Vista). Since Windows 8 the x64 kernel
        # exports the former HAL timing routines itself, and the WDK's x64
        # ntoskrnl.lib resolves them there; mingw-w64 lists
        # KeQueryPerformanceCounter only in libhal.a.
        ntoskrnl) printf '%s\n' ExAllocatePool2 KeQueryPerformanceCounter MmAllocateContiguousNodeMemory ;;
    esac
}
# Exports a mingw-w64 import library lists that the WDK's x64 library for
# the same DLL does not resolve (see extra_exports).
dropped_exports() {
    case "$1" in
        hal) echo KeQueryPerformanceCounter ;;
    esac
}
import_libs_changed=0
for spec in ntoskrnl:ntoskrnl.exe hal:HAL.dll wmilib:WMILIB.SYS ks:ks.sys; do
    lib=${spec%%:*}
    dll=${spec#*:}
    {
        echo "LIBRARY $dll"
        echo "EXPORTS"
        {
            llvm-nm "$mingw_lib/lib$lib.a" 2>/dev/null | awk '
                $2 == "I" && $3 ~ /^__imp_/ { imp[substr($3, 7)] = 1 }
                $2 == "T"                   { code[$3] = 1 }
                END {
                    for (name in imp) {
                        if (name in code) print name; else print name " DATA"
                    }
                }'
            extra_exports "$lib"
        } | LC_ALL=C sort -u | grep -vxF -f <(dropped_exports "$lib"; echo '#none#') \
          | sed -e 's/^/    /' -e 's/ *$//'
    } | write_if_changed "$libdir/$lib.def"
    if [[ ! -f "$libdir/$lib.lib" || "$libdir/$lib.def" -nt "$libdir/$lib.lib" ]]; then
        llvm-dlltool -m i386:x86-64 -d "$libdir/$lib.def" -l "$libdir/$lib.lib"
        import_libs_changed=1
    fi
done
# The WDK's static /GS support library; rustc emits no /GS checks, so an
# empty archive satisfies the linker.
printf '!<arch>\n' | write_if_changed "$libdir/BufferOverflowFastFailK.lib"

# ---------------------------------------------------------------------------
step "4. cargo build --release --target $TARGET --features kernel (walls 4, 7, 8)"
mkdir -p "$cross/bin"
# Wall 7: lld-link without /KERNEL and /MAPINFO:EXPORTS.
cat <<EOF | write_if_changed "$cross/bin/avscap-lld-link"
#!/bin/sh
exec python3 "$scripts/lld_link_filter.py" "\$@"
EOF
chmod +x "$cross/bin/avscap-lld-link"

target_dir="$cross/target"
# cargo does not track the import libraries: when one changed, drop the
# linked DLL so cargo links again (a missing output makes the unit stale).
if [[ $import_libs_changed == 1 ]]; then
    rm -f "$target_dir/$TARGET/release/avscap.dll"
fi
# cargo with everything the cross-build needs: run from the crate root, the
# synthetic WDK (wall 2), bindgen/clang in MSVC mode over mingw-w64 headers needing
# __GNUC__ and clang's own intrinsics headers (wall 4), the patched
# wdk-build (wall 1), the linker wrapper (wall 7) and +crt-static for the
# driver target only (wall 8; a global rustflags would break host
# proc-macros and build scripts).
cargo_cross() {
    (
        cd "$root"
        export WDKContentRoot="$wdk_root"
        export LIBCLANG_PATH="$libclang_dir"
        export BINDGEN_EXTRA_CLANG_ARGS_x86_64_pc_windows_msvc="-fgnuc-version=4.2.1 -isystem $clang_resource_dir/include"
        cargo "$1" --release --target "$TARGET" --features kernel \
            --target-dir "$target_dir" \
            --config "patch.crates-io.wdk-build.path=\"$wdk_build_patched\"" \
            --config "target.$TARGET.linker=\"$cross/bin/avscap-lld-link\"" \
            --config "target.$TARGET.rustflags=[\"-C\", \"target-feature=+crt-static\"]" \
            "${@:2}"
    )
}

# While the patch is in effect cargo rewrites Cargo.lock's wdk-build entry
# as a path package (no `source`, no `checksum`). Put the committed lock file
# back afterwards (also on failure), but only if that is the sole
# difference, so a lock change made meanwhile by anyone else is never undone.
lock="$root/Cargo.lock"
lock_backup="$cross/Cargo.lock.before-cross-build"
cp -p "$lock" "$lock_backup"
lock_without_wdk_build_source() {
    awk '
        /^\[\[package\]\]/                   { in_wdk_build = 0 }
        /^name = "wdk-build"$/                { in_wdk_build = 1 }
        in_wdk_build && /^(source|checksum) = / { next }
        { print }
    ' "$1"
}
restore_lock() {
    if cmp -s "$lock_backup" "$lock"; then
        return
    fi
    if cmp -s <(lock_without_wdk_build_source "$lock_backup") <(lock_without_wdk_build_source "$lock"); then
        cp -p "$lock_backup" "$lock"
    else
        echo "cross-build.sh: WARNING: Cargo.lock was changed during the build beyond the" \
            "wdk-build patch; left as it is (see git diff Cargo.lock)" >&2
    fi
}
trap restore_lock EXIT
cargo_cross build
if [[ $clippy -eq 1 ]]; then
    step "4b. cargo clippy (kernel feature, $TARGET) -D warnings"
    cargo_cross clippy -- -D warnings
fi
restore_lock
step "4c. KS bindings take no windef type from wdk-sys (the WDK's kernel headers lack them)"
bindings=$(ls -t "$target_dir/$TARGET"/release/build/avscap-*/out/ks_bindings.rs 2>/dev/null | head -1)
[[ -n "$bindings" ]] || die "no generated ks_bindings.rs under $target_dir"
python3 "$scripts/check_ks_bindings.py" "$bindings" "$mingw_include" \
    || die "the KS bindings would not compile against the WDK (see above)"
dll="$target_dir/$TARGET/release/avscap.dll"
[[ -f "$dll" ]] || die "cargo produced no $dll"

# ---------------------------------------------------------------------------
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
step "5. Package: $out_dir"
# Wall 9/10: avscap.sys with its PE checksum filled in.
sys="$out_dir/avscap.sys"
cp -f "$dll" "$sys.tmp"
python3 "$scripts/pe_checksum.py" fix "$sys.tmp" >/dev/null
mv -f "$sys.tmp" "$sys"
[[ -f "${dll%.dll}.pdb" ]] && cp -f "${dll%.dll}.pdb" "$out_dir/avscap.pdb"
# The map is written next to the linker's output, in deps/ (cargo only
# uplifts the DLL and the PDB). It carries the link's timestamp, which the
# emulated kernel checks against avscap.sys's.
map="$target_dir/$TARGET/release/deps/avscap.map"
[[ -f "$map" && ! "$map" -ot "$target_dir/$TARGET/release/deps/avscap.dll" ]] \
    || die "no linker map $map as new as the DLL (wdk-build asks lld-link for /MAP)"
cp -f "$map" "$out_dir/avscap.map"

inx="$root/inf/avscap.inx"
if [[ -f "$inx" ]]; then
    # What stampinf does: $ARCH$ and DriverVer. The date is the last commit's
    # (reproducible), or today's outside a git checkout.
    crate_version=$(sed -n 's/^version *= *"\([0-9.]*\)".*/\1/p' "$root/Cargo.toml" | head -1)
    driver_date=$(git -C "$root" log -1 --format=%cd --date=format:%m/%d/%Y 2>/dev/null || date -u +%m/%d/%Y)
    python3 "$scripts/stampinf.py" "$inx" "$out_dir/avscap.inf" amd64 "$driver_date" "$crate_version.0"
    echo "wrote $out_dir/avscap.inf (DriverVer = $driver_date,$crate_version.0)" >&2
else
    rm -f "$out_dir/avscap.inf"
    echo "inf/avscap.inx not found: no avscap.inf written" >&2
fi

# ---------------------------------------------------------------------------
step "6. Check"
"$scripts/check-sys.sh" "$sys"
printf '\ncross-build.sh: %s (%s bytes) in %ss\n' "$sys" "$(stat -c %s "$sys")" $((SECONDS - started)) >&2
