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
# Needs release builds of keygate and the examples bench_upstream and bench_fill (built here
# when BIN is not given), nginx, h2load (nghttp2-client) and valgrind; installs those with
# apt-get when run as root.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BIN='' N=20000 CONNS=4
while (($#)); do
    case $1 in
    --keygate) BIN=$2; shift ;;
    -n) N=$2; shift ;;
    -c) CONNS=$2; shift ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
CG_N=$((N / 10))

log() { printf '[cpu %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

missing=()
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v valgrind >/dev/null || missing+=(valgrind)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
if ((${#missing[@]})); then
    ((EUID == 0)) || die "missing ${missing[*]}: run as root, or apt-get install -y ${missing[*]}"
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
if [[ -z $BIN ]]; then
    log "building keygate and the bench tools (release) in ${TARGET%/release}"
    cargo build --release --locked --quiet --bin keygate --example bench_upstream \
        --example bench_fill
    BIN=$TARGET/keygate
fi
[[ -x $BIN ]] || die "no keygate binary at $BIN"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/keygate-cpu.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port) KG=$(port) NGX=$(port)
"$TARGET/examples/bench_upstream" "127.0.0.1:$UP" >/dev/null 2>&1 &
PIDS+=($!)
KEY=$("$TARGET/examples/bench_fill" "$WORK/state" 1 2>/dev/null | tail -1)

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
mkdir -p "$WORK/nginx/tmp"
user_line=''
((EUID == 0)) && user_line='user root;'
cat >"$WORK/nginx/nginx.conf" <<EOF
$user_line
master_process off;
daemon off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    tcp_nodelay on;
    keepalive_requests 1000000;
    upstream bench { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$NGX;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
EOF

printf '%s' '{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello in one word."}],"max_tokens":16}' \
    >"$WORK/body.json"

# Starts ARM (keygate or nginx), optionally under a wrapper command; sets PID.
start() {
    local arm=$1 wrapper=("${@:2}")
    case $arm in
    keygate) "${wrapper[@]}" "$BIN" serve --config "$WORK/kg/keygate.toml" >"$WORK/$arm.log" 2>&1 & ;;
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
    start "$arm"
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

python3 - "$RAW" "$HZ" "$CONNS" "bench/results/cpu-$STAMP.json" "$(git rev-parse --short HEAD)" <<'PY'
import json, sys
raw, hz, conns, out, commit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
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
print(f"HTTP/1.1, {conns} connections, keygate {commit}\n")
print("| per proxied request | B: nginx | C: keygate | C÷B |")
print("|---|---|---|---|")
for name, key, fmt in [
    ("user-space instructions (callgrind)", "instructions_per_request", "{:,.0f}"),
    ("user CPU (µs)", "user_us_per_request", "{:.1f}"),
    ("system CPU (µs)", "system_us_per_request", "{:.1f}"),
]:
    print(f"| {name} | {fmt.format(b[key])} | {fmt.format(k[key])} | {k[key] / b[key]:.2f}× |")
json.dump({"commit": commit, "connections": conns, "arms": arms}, open(out, "w"), indent=2)
print(f"\n(written to {out})")
PY
