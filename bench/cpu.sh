#!/usr/bin/env bash
# Work per proxied request, keygate (C) against nginx's reverse proxy (B): the CPU time each
# proxy's process spends per request, and the user-space instructions it executes per request,
# counted by valgrind's callgrind. Counting instructions gives the same figure on a busy machine
# and on one without hardware counters (a VM), where timings move by 10% from run to run.
#
#   bench/cpu.sh [--keygate BIN] [-n N] [-c CONNECTIONS]
#
# N requests (default 20000; a tenth of that under callgrind, which runs ~50x slower) over
# CONNECTIONS HTTP/1.1 connections (default 4) with h2load, after a warm-up. Prints a table
# and writes bench/results/cpu-<UTC timestamp>.json; keygate's callgrind profile is kept beside
# it (bench/results/cpu-<stamp>.keygate.callgrind) for `callgrind_annotate --inclusive=yes`.
# Builds the bench tools in release mode and keygate as it ships (bench/build.sh: static, PGO
# unless BENCH_PGO=0; ATTACK_NO_BUILD=1 skips building; --keygate measures another keygate
# binary). Needs nginx, h2load (nghttp2-client) and valgrind; installs those with apt-get when
# run as root.
set -Eeuo pipefail
KG_BIN='' N=20000 CONNS=4
while (($#)); do
    case $1 in
    --keygate) KG_BIN=$2; shift ;;
    -n) N=$2; shift ;;
    -c) CONNS=$2; shift ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
CG_N=$((N / 10))

# log, die, need, build, free_port, $WORK and the cleanup of $PIDS at exit.
BENCH_TAG=cpu
# shellcheck source=bench/attack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/attack/lib.sh"
# shellcheck source=bench/nginx.sh
source "$ROOT/bench/nginx.sh"
cd "$ROOT"

need h2load:nghttp2-client valgrind:valgrind /usr/sbin/nginx:nginx-light
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -n $KG_BIN ]] && SKIP_KEYGATE_BUILD=1
build
KEYGATE=${KG_BIN:-$KEYGATE}
[[ -x $KEYGATE ]] || die "no keygate binary at $KEYGATE"

UP=$(free_port) KG=$(free_port) NGX=$(free_port)
CPU=$(($(nproc) - 1))
"$BIN/examples/bench_upstream" "127.0.0.1:$UP" >/dev/null 2>&1 &
PIDS+=($!)
KEY=$("$BIN/examples/bench_fill" "$WORK/state" 1 2>/dev/null | tail -1)

# keygate as bench/run.sh runs it: auth, a rate limit that never empties, metering, no access
# log. The config gets a directory of its own (keygate watches it).
mkdir -p "$WORK/kg"
cat >"$WORK/kg/keygate.toml" <<EOF
[server]
state_dir = "$WORK/state"
[admin]
socket = "$WORK/admin.sock"
[[listeners]]
addr = "127.0.0.1:$KG"
[limits]
rate_limit = { requests = 100000000, interval = "1s" }
[log]
level = "warn"
[upstreams.bench]
base_url = "http://127.0.0.1:$UP"
[[routes]]
path = "/v1/"
upstream = "bench"
EOF

# nginx as bench/run.sh runs it, in one process so that one callgrind sees all of its work.
nginx_config "$WORK/nginx" "$UP" single "        listen 127.0.0.1:$NGX;"

printf '%s' '{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello in one word."}],"max_tokens":16}' \
    >"$WORK/body.json"

# Starts ARM (keygate or nginx), optionally under a wrapper command; sets PID.
start() {
    local arm=$1 wrapper=("${@:2}")
    case $arm in
    keygate) "${wrapper[@]}" "$KEYGATE" serve --config "$WORK/kg/keygate.toml" >"$WORK/$arm.log" 2>&1 & ;;
    nginx) "${wrapper[@]}" "$NGINX" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" >"$WORK/$arm.log" 2>&1 & ;;
    esac
    PID=$!
    PIDS+=("$PID")
    local deadline=$((SECONDS + 120))
    until curl -sf -o /dev/null --max-time 5 "$(url "$arm")" -H "authorization: Bearer $KEY" \
        -H 'content-type: application/json' --data-binary @"$WORK/body.json"; do
        kill -0 "$PID" 2>/dev/null || die "$arm exited: $(tail -3 "$WORK/$arm.log")"
        ((SECONDS < deadline)) || die "$arm did not answer within 120 s"
        sleep 0.2
    done
}
stop() { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
url() { [[ $1 == keygate ]] && echo "http://127.0.0.1:$KG/v1/chat/completions" || echo "http://127.0.0.1:$NGX/v1/chat/completions"; }
# Sends N requests to ARM; fails unless every one succeeded.
load() {
    h2load --h1 -n "$2" -c "$CONNS" -m 1 -d "$WORK/body.json" \
        -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
        "$(url "$1")" >"$WORK/h2load.out" 2>&1 || true
    grep -q "$2 succeeded, 0 failed, 0 errored" "$WORK/h2load.out" ||
        die "$1: not every request succeeded: $(grep 'requests:' "$WORK/h2load.out")"
}
# user and system clock ticks of PID, all threads.
ticks() { cat /proc/"$1"/task/*/stat | sed 's/.*) //' | awk '{u += $12; s += $13} END {print u, s}'; }

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
RAW=$WORK/raw.txt
HZ=$(getconf CLK_TCK)
for arm in nginx keygate; do
    log "$arm: CPU time over $N requests"
    # Both on one CPU: nginx runs one worker here, and keygate runs one per CPU it may use.
    # Two workers sharing 4 connections wake up more often and spend ~10 µs more kernel time
    # per request than one; that is the thread count, not the work a request takes.
    start "$arm" taskset -c "$CPU"
    load "$arm" 2000
    read -r u0 s0 < <(ticks "$PID")
    load "$arm" "$N"
    read -r u1 s1 < <(ticks "$PID")
    stop
    log "$arm: instructions over $CG_N requests under callgrind"
    start "$arm" valgrind --tool=callgrind --callgrind-out-file="$WORK/$arm.callgrind"
    load "$arm" 200
    callgrind_control -z "$PID" >/dev/null 2>&1
    load "$arm" "$CG_N"
    callgrind_control -d "$PID" >/dev/null 2>&1
    stop
    # The dump asked for holds the measured requests; the file written at exit holds the rest.
    dump=$(grep -l '^desc: Trigger: dump' "$WORK/$arm.callgrind"*)
    ir=$(awk '/^summary:/ {print $2}' "$dump")
    [[ $arm == keygate ]] && cp "$dump" "bench/results/cpu-$STAMP.keygate.callgrind"
    echo "$arm $N $((u1 - u0)) $((s1 - s0)) $CG_N $ir" >>"$RAW"
done

build_of=$KEYGATE_BUILD
[[ -n $KG_BIN ]] && build_of="--keygate $KG_BIN"
python3 - "$RAW" "$HZ" "$CONNS" "bench/results/cpu-$STAMP.json" "$(git rev-parse --short HEAD)" "$build_of" <<'PY'
import json, sys
raw, hz, conns, out, commit, build = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
arms = {}
for line in open(raw):
    arm, n, u, s, cg_n, ir = line.split()
    n, cg_n = int(n), int(cg_n)
    arms[arm] = {
        "requests": n,
        "user_us_per_request": int(u) / hz / n * 1e6,
        "system_us_per_request": int(s) / hz / n * 1e6,
        "callgrind_requests": cg_n,
        "instructions_per_request": int(ir) / cg_n,
    }
k, b = arms["keygate"], arms["nginx"]
print(f"HTTP/1.1, {conns} connections, keygate {commit} ({build})\n")
print("| per proxied request | B: nginx | C: keygate | C÷B |")
print("|---|---|---|---|")
for name, key, fmt in [
    ("user-space instructions (callgrind)", "instructions_per_request", "{:,.0f}"),
    ("user CPU (µs)", "user_us_per_request", "{:.1f}"),
    ("system CPU (µs)", "system_us_per_request", "{:.1f}"),
]:
    print(f"| {name} | {fmt.format(b[key])} | {fmt.format(k[key])} | {k[key] / b[key]:.2f}× |")
json.dump({"commit": commit, "build": build, "connections": conns, "arms": arms}, open(out, "w"), indent=2)
print(f"\n(written to {out})")
PY
