#!/usr/bin/env bash
# check-sys.sh: checks a built avscap.sys (or any x64 WDM driver image).
#
# Usage: scripts/check-sys.sh [--expected-imports FILE] [--write-imports FILE] SYS
#
# Fails (exit 1) unless, according to `llvm-readobj --file-headers
# --coff-imports`:
#   * Machine is IMAGE_FILE_MACHINE_AMD64 and Subsystem IMAGE_SUBSYSTEM_NATIVE;
#   * DllCharacteristics has DYNAMIC_BASE, NX_COMPAT and FORCE_INTEGRITY;
#   * the set of imports, one `dll!Function` per line, equals FILE exactly
#     (default scripts/expected-imports.txt; sorted, `#` comments and blank
#     lines ignored, DLL names compared case-insensitively); a difference is
#     printed as a diff;
#   * the PE CheckSum is non-zero and equals the recomputed one.
# --write-imports FILE writes the image's actual import list to FILE (a
# starting point when the expected list has to grow); it does not skip the
# checks.
# Needs llvm-readobj (Debian package llvm) and python3.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
expected="$here/expected-imports.txt"
write_imports=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --expected-imports) expected=$2; shift 2 ;;
        --write-imports) write_imports=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) echo "check-sys.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [[ $# -ne 1 ]]; then
    echo "usage: check-sys.sh [--expected-imports FILE] [--write-imports FILE] SYS" >&2
    exit 2
fi
sys=$1
[[ -f "$sys" ]] || { echo "check-sys.sh: $sys: no such file" >&2; exit 1; }
[[ -f "$expected" ]] || { echo "check-sys.sh: $expected: no such file" >&2; exit 1; }

readobj=$(command -v llvm-readobj || true)
[[ -n "$readobj" ]] || { echo "check-sys.sh: llvm-readobj not found (apt-get install llvm)" >&2; exit 1; }

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

report=$("$readobj" --file-headers --coff-imports "$sys")

grep -Eq '^\s*Machine: IMAGE_FILE_MACHINE_AMD64\b' <<<"$report" \
    || fail "Machine is not AMD64: $(grep -m1 -E '^\s*Machine:' <<<"$report" | xargs)"
grep -Eq '^\s*Subsystem: IMAGE_SUBSYSTEM_NATIVE\b' <<<"$report" \
    || fail "Subsystem is not NATIVE: $(grep -m1 -E '^\s*Subsystem:' <<<"$report" | xargs)"
for characteristic in DYNAMIC_BASE NX_COMPAT FORCE_INTEGRITY; do
    grep -Eq "^\s*IMAGE_DLL_CHARACTERISTICS_${characteristic}\b" <<<"$report" \
        || fail "DllCharacteristics lacks ${characteristic}"
done

# `Import { Name: X ... Symbol: F (hint) ... }` blocks -> X!F lines. The DLL
# part is lower-cased: the loader matches module names case-insensitively,
# and the import libraries of the WDK and of this cross-build spell them
# differently.
actual=$(awk '
    /^[[:space:]]*Import \{/               { in_import = 1; dll = ""; next }
    in_import && /^[[:space:]]*Name: /   { dll = tolower($2); next }
    in_import && /^[[:space:]]*Symbol: / { print dll "!" $2; next }
    /^[[:space:]]*\}/                      { in_import = 0 }
' <<<"$report" | LC_ALL=C sort -u)
wanted=$(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$expected" \
    | awk -F'!' '{ print tolower($1) "!" $2 }' | LC_ALL=C sort -u)

if [[ -n "$write_imports" ]]; then
    printf '%s\n' "$actual" >"$write_imports"
fi

if [[ "$actual" != "$wanted" ]]; then
    fail "imports differ from $expected (- expected, + actual):"
    diff -u <(grep . <<<"$wanted" || true) <(grep . <<<"$actual" || true) \
        | tail -n +3 | grep -E '^[-+]' >&2 || true
fi

python3 "$here/pe_checksum.py" verify "$sys" >/dev/null || fail "PE CheckSum check failed"

if [[ $failures -ne 0 ]]; then
    echo "check-sys.sh: $sys: $failures check(s) failed" >&2
    exit 1
fi
echo "check-sys.sh: $sys: AMD64, NATIVE, DYNAMIC_BASE|NX_COMPAT|FORCE_INTEGRITY, $(wc -l <<<"$actual") imports as expected, CheckSum verified"
