#!/usr/bin/env bash
# Runs avscap's benchmarks (benches/ratios.rs) and prints the ratio table:
# every figure is a ratio against a baseline measured in the same run, the
# two interleaved (see BENCHMARKS.md).
#
#   scripts/bench.sh [GROUP...]     groups: pool threads synthesis copy
#                                   engine simulator (default: all)
#
# The single-threaded groups run pinned to one CPU (AVSCAP_BENCH_CPU,
# default 1) with taskset; the two-thread pool group runs on CPUs 0 and 1.
# The table is also written to target/bench/ratios.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cpu="${AVSCAP_BENCH_CPU:-1}"
all=(pool threads synthesis copy engine simulator)
groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=("${all[@]}")
for g in "${groups[@]}"; do
    case " ${all[*]} " in
    *" $g "*) ;;
    *) echo "bench.sh: unknown group '$g' (groups: ${all[*]})" >&2; exit 2 ;;
    esac
done
command -v taskset >/dev/null || { echo "bench.sh: taskset (util-linux) is required" >&2; exit 1; }
ncpu=$(nproc --all)
[ "$cpu" -lt "$ncpu" ] || { echo "bench.sh: AVSCAP_BENCH_CPU=$cpu but this machine has $ncpu CPUs" >&2; exit 2; }

echo "building (release)..." >&2
cargo bench --bench ratios --no-run -q
cargo build --release --example simulate -q

out=target/bench
mkdir -p "$out"
single=()
threads=0
for g in "${groups[@]}"; do
    if [ "$g" = threads ]; then threads=1; else single+=("$g"); fi
done

taskset -c "$cpu" cargo bench -q --bench ratios -- machine "${single[@]}" >"$out/single.md"
: >"$out/threads.md"
if [ "$threads" = 1 ]; then
    if [ "$ncpu" -ge 2 ]; then
        taskset -c 0,1 cargo bench -q --bench ratios -- threads >"$out/threads.md"
    else
        echo "bench.sh: one CPU here; the two-thread group is skipped" >&2
    fi
fi

{
    # Machine lines, then one table: its header once, every group's rows.
    grep -v '^|' "$out/single.md" || true
    cat "$out/single.md" "$out/threads.md" | awk '
        /^\| what / || /^\| --- / { if (!seen[$0]++) print; next }
        /^\|/ { print }'
} | tee "$out/ratios.md"
