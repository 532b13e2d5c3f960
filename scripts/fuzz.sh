#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (README "Fuzzing").
#
#   scripts/fuzz.sh [TARGET|all] [--time SECONDS | --runs N] [--jobs N]
#
# TARGET is one of the targets in fuzz/fuzz_targets/ (default: all, one
# after the other). --time bounds each target's run in seconds, --runs in
# executions (default: --time 60). --jobs N runs N fuzzing processes
# (libFuzzer's -fork=N) instead of one.
#
# Each target starts from its checked-in seeds (fuzz/seeds/TARGET, read
# only) and from its working corpus (fuzz/corpus/TARGET, not committed),
# where the inputs it finds go. Targets are built with debug assertions and
# overflow checks, without a sanitizer (the core is safe Rust). Installs
# the pinned nightly (scripts/nightly.env) and cargo-fuzz when missing.
#
# Prints per target the executions done, the time, the corpus size and the
# coverage; exits non-zero when any target fails, naming the input that
# made it fail (fuzz/artifacts/TARGET/...).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.1
# shellcheck source=nightly.env
source scripts/nightly.env

usage() {
    echo "usage: scripts/fuzz.sh [TARGET|all] [--time SECONDS | --runs N] [--jobs N]" >&2
    echo "targets: all $(targets | tr '\n' ' ')" >&2
    exit 2
}

targets() {
    for f in fuzz/fuzz_targets/*.rs; do basename "$f" .rs; done
}

is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }

target=all
limit=(-max_total_time=60)
limit_set=
jobs=1
while [ $# -gt 0 ]; do
    case "$1" in
        --time | --runs)
            [ $# -ge 2 ] || { echo "fuzz.sh: $1 needs a value" >&2; usage; }
            is_count "$2" || { echo "fuzz.sh: $1 wants a positive whole number, not '$2'" >&2; usage; }
            [ -z "$limit_set" ] || { echo "fuzz.sh: give one of --time and --runs, once" >&2; usage; }
            limit_set=1
            if [ "$1" = --time ]; then limit=(-max_total_time="$2"); else limit=(-runs="$2"); fi
            shift 2
            ;;
        --jobs)
            [ $# -ge 2 ] || { echo "fuzz.sh: --jobs needs a value" >&2; usage; }
            is_count "$2" || { echo "fuzz.sh: --jobs wants a positive whole number, not '$2'" >&2; usage; }
            jobs=$2
            shift 2
            ;;
        -h | --help) usage ;;
        -*) echo "fuzz.sh: unknown flag '$1'" >&2; usage ;;
        *)
            [ "$target" = all ] || { echo "fuzz.sh: one target at a time ('$target', then '$1')" >&2; usage; }
            target=$1
            shift
            ;;
    esac
done

if [ "$target" = all ]; then
    mapfile -t run_targets < <(targets)
elif [ -f "fuzz/fuzz_targets/$target.rs" ]; then
    run_targets=("$target")
else
    echo "fuzz.sh: no target '$target'" >&2
    usage
fi

# The toolchain and cargo-fuzz, when missing.
if ! rustup run "$AVSCAP_NIGHTLY" rustc --version >/dev/null 2>&1; then
    echo "installing: $AVSCAP_NIGHTLY" >&2
    rustup toolchain install "$AVSCAP_NIGHTLY" --profile minimal
fi
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "installing: cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

fuzz=(cargo "+$AVSCAP_NIGHTLY" fuzz)
build_flags=(--sanitizer none)

echo "== building the fuzz targets"
build_target=()
[ "$target" = all ] || build_target=("$target")
"${fuzz[@]}" build "${build_flags[@]}" "${build_target[@]}"

logs=fuzz/target/logs
mkdir -p "$logs"
failed=()
for t in "${run_targets[@]}"; do
    corpus=fuzz/corpus/$t
    seeds=fuzz/seeds/$t
    mkdir -p "$corpus"
    dirs=("$corpus")
    [ -d "$seeds" ] && dirs+=("$seeds")
    args=("${limit[@]}" -print_final_stats=1)
    [ "$jobs" -gt 1 ] && args+=(-fork="$jobs")
    log=$logs/$t.log
    echo "== $t (${limit[*]#-}, jobs $jobs)"
    start=$(date +%s)
    status=0
    "${fuzz[@]}" run "${build_flags[@]}" "$t" "${dirs[@]}" -- "${args[@]}" >"$log" 2>&1 || status=$?
    elapsed=$(($(date +%s) - start))
    # libFuzzer's final count, or (fork mode) its last status line's.
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' <<<"$last" || true)
    # libFuzzer's active corpus (inputs/bytes), and the files kept on disk.
    corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' <<<"$last" | cut -d' ' -f2 || true)
    files=$(find "$corpus" -type f | wc -l)
    rate=$(( ${execs:-0} / (elapsed > 0 ? elapsed : 1) ))
    printf '%s: %s executions in %s s (%s/s), corpus %s (%s files), %s\n' \
        "$t" "${execs:-?}" "$elapsed" "$rate" "${corp:-?}" "$files" "${cov:-cov: ?}"
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
        echo "$t FAILED (exit $status); its log: $log" >&2
        grep -A8 -m1 "panicked at" "$log" >&2 || true
        grep -E "Test unit written to|SUMMARY" "$log" >&2 || true
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: failed: ${failed[*]} (inputs in fuzz/artifacts/; reproduce with cargo +$AVSCAP_NIGHTLY fuzz run -s none TARGET ARTIFACT)" >&2
    exit 1
fi
echo "fuzz.sh: ${#run_targets[@]} target(s), no failure"
