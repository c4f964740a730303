#!/usr/bin/env bash
# Runs every fuzz target (or those named) for MINUTES minutes each, one after another, with its
# dictionary, on stable Rust (cargo-fuzz with `--sanitizer none`). Exits non-zero if any target
# crashed, hung or failed to build; the crashing input is in fuzz/artifacts/TARGET/.
#
#   fuzz/run.sh [MINUTES] [TARGET...]        (default: 5 minutes, every target)
#
# The fuzzer grows its corpus in fuzz/target/work-corpus/TARGET (ignored by git), reading the
# committed seeds in fuzz/corpus/TARGET without writing there. Logs: fuzz/target/fuzz-logs/.
# Needs `cargo install cargo-fuzz`. Runs under `nice`: the machine is shared.
set -uo pipefail

cd "$(dirname "$0")"
minutes=${1:-5}
shift || true
if [[ ! $minutes =~ ^[0-9]+$ ]] || ((minutes == 0)); then
    echo "usage: $0 [MINUTES] [TARGET...]" >&2
    exit 2
fi
targets=("$@")
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cargo fuzz list)
fi

# Largest input tried, per target: room for config.example.toml and a few SSE events.
max_len() {
    case $1 in
        config_parse) echo 16384 ;;
        usage_reader | json_body) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

mkdir -p target/fuzz-logs
# One build for all targets (cargo fuzz build takes at most one name).
build_one=()
if ((${#targets[@]} == 1)); then build_one=("${targets[0]}"); fi
if ! nice -n 10 cargo fuzz build -s none "${build_one[@]}"; then
    echo "build failed" >&2
    exit 1
fi

failed=()
summary=()
for t in "${targets[@]}"; do
    log=target/fuzz-logs/$t.log
    mkdir -p "target/work-corpus/$t" "artifacts/$t"
    echo "== $t: $minutes min (log: fuzz/$log)"
    # stdin from /dev/null: nothing a target does may wait on a terminal.
    nice -n 10 cargo fuzz run -s none "$t" "target/work-corpus/$t" "corpus/$t" -- \
        -max_total_time=$((minutes * 60)) \
        -dict="dicts/$t.dict" \
        -max_len="$(max_len "$t")" \
        -timeout=10 \
        -print_final_stats=1 \
        </dev/null >"$log" 2>&1
    status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n1)
    if ((status == 0)); then
        result=ok
    else
        result="FAILED (exit $status)"
        failed+=("$t")
        grep -E '^(==[0-9]+== ERROR|SUMMARY|thread .* panicked|Test unit written|artifact_prefix)' "$log" | head -n 5
    fi
    summary+=("$(printf '%-14s %-18s runs %-10s %s' "$t" "$result" "${runs:-?}" "${cov:-}")")
done

echo
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
