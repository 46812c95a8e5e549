#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS (default 20) each, starting from a
# scratch copy of its committed seed corpus (fuzz/corpus/<target>/ is never
# written to), and writes fuzz/target/summary.json:
#
#   {"seconds_per_target": N, "targets": [{"target": "name", "executions": N, "crashes": N}]}
#
# Exits non-zero if any target crashed (after running them all), naming the
# crash input under fuzz/artifacts/<target>/. Needs the nightly toolchain.
set -euo pipefail

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
if ! [[ "$FUZZ_SECONDS" =~ ^[1-9][0-9]*$ ]]; then
    echo "FUZZ_SECONDS must be a positive whole number of seconds, not '$FUZZ_SECONDS'" >&2
    exit 2
fi

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# cargo-fuzz finds fuzz/ from the project root.
cd "$fuzz_dir/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "the nightly toolchain is missing: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

mapfile -t targets < <(cargo +nightly fuzz list)
if [[ ${#targets[@]} -eq 0 ]]; then
    echo "no fuzz targets found" >&2
    exit 2
fi

# Build everything once, so the timed runs below measure fuzzing only.
echo "building ${#targets[@]} fuzz targets"
cargo +nightly fuzz build

scratch_root="$fuzz_dir/target/corpus"
log_dir="$fuzz_dir/target/logs"
summary="$fuzz_dir/target/summary.json"
mkdir -p "$scratch_root" "$log_dir"

entries=()
failed=()
started=$SECONDS
for target in "${targets[@]}"; do
    seeds="$fuzz_dir/corpus/$target"
    scratch="$scratch_root/$target"
    log="$log_dir/$target.log"
    rm -rf "$scratch"
    mkdir -p "$scratch"
    if [[ -d "$seeds" ]]; then
        cp -R "$seeds/." "$scratch/"
    fi

    if cargo +nightly fuzz run "$target" "$scratch" -- \
        -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -rss_limit_mb=2048 \
        >"$log" 2>&1; then
        crashes=0
    else
        crashes=1
    fi

    executions="$(sed -n 's/^stat::number_of_executed_units: *\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)"
    if [[ -z "$executions" ]]; then
        # No final stats (killed before printing them): the last status line.
        executions="$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$log" | tail -n 1)"
    fi
    executions="${executions:-0}"
    entries+=("{\"target\": \"$target\", \"executions\": $executions, \"crashes\": $crashes}")

    if [[ $crashes -eq 0 ]]; then
        echo "$target: ok, $executions executions in ${FUZZ_SECONDS}s, 0 crashes"
    else
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
        echo "$target: CRASH after $executions executions; input: ${artifact:-none written (see the log)}; log: $log"
        failed+=("$target")
    fi
done

joined="$(printf '%s, ' "${entries[@]}")"
printf '{"seconds_per_target": %s, "targets": [%s]}\n' "$FUZZ_SECONDS" "${joined%, }" >"$summary"
echo "fuzzed ${#targets[@]} targets in $((SECONDS - started))s; summary: $summary"

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "crashed: ${failed[*]} (reproduce: cargo +nightly fuzz run <target> <input>)" >&2
    exit 1
fi
