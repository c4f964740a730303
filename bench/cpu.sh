#!/usr/bin/env bash
# CPU cost per request of a keygate binary: instructions and CPU time (user+sys) the keygate
# process spends on N chat-completion requests through it to the bench upstream. Counting work
# instead of timing it gives comparable figures on a busy machine.
#
#   bench/cpu.sh [KEYGATE_BIN] [N] [CONNECTIONS]
# Needs release builds of examples bench_upstream and bench_fill (cargo build --release
# --examples), h2load (nghttp2-client) and perf (linux-perf).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
bin="${1:-$target/keygate}"
n="${2:-20000}"
conns="${3:-4}"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(port); kg=$(port)
"$target/examples/bench_upstream" "127.0.0.1:$up" >/dev/null 2>&1 & pids+=($!)
key=$("$target/examples/bench_fill" "$tmp/state" 1 2>/dev/null | tail -1)
cat > "$tmp/kg.toml" <<TOML
[server]
state_dir = "$tmp/state"
[admin]
socket = "$tmp/admin.sock"
[[listeners]]
addr = "127.0.0.1:$kg"
[log]
level = "warn"
[upstreams.up]
base_url = "http://127.0.0.1:$up"
[[routes]]
path = "/v1/"
upstream = "up"
TOML
"$bin" serve --config "$tmp/kg.toml" 2>"$tmp/kg.log" & kgpid=$!; pids+=($kgpid)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$kg/healthz" >/dev/null && break; sleep 0.05; done
body='{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello in one word."}],"max_tokens":16}'
printf '%s' "$body" > "$tmp/body.json"
load() {
    h2load --h1 -n "$1" -c "$conns" -m 1 -d "$tmp/body.json" \
        -H "authorization: Bearer $key" -H 'content-type: application/json' \
        "http://127.0.0.1:$kg/v1/chat/completions" >"$tmp/h2load.log" 2>&1
    grep -q " 0 failed, 0 errored" "$tmp/h2load.log" || grep "requests:" "$tmp/h2load.log" >&2
}
load 2000   # warm up pools and caches
perf stat -x, -e instructions,task-clock -p "$kgpid" -o "$tmp/perf.csv" & perf=$!
sleep 0.2
load "$n"
kill -INT "$perf"; wait "$perf" 2>/dev/null || true
ins=$(awk -F, '/instructions/ {print $1}' "$tmp/perf.csv")
ms=$(awk -F, '/task-clock/ {print $1}' "$tmp/perf.csv")
ok=$(grep -o '[0-9]* succeeded' "$tmp/h2load.log" | cut -d' ' -f1)
python3 - "$ins" "$ms" "$n" "$ok" <<'PY'
import sys
ins, ms, n, ok = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
per = lambda x: x / n
ins_txt = f"{per(float(ins)):,.0f} instructions, " if ins.replace('.','',1).isdigit() else ""
print(f"{ins_txt}{per(ms)*1000:.1f} µs CPU per request ({ok}/{n} succeeded)")
PY
