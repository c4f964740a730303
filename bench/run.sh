#!/usr/bin/env bash
# keygate's benchmark harness: keygate (C) against nginx's reverse proxy (B) and against no proxy
# at all (A), in one run, interleaved, repeated. See bench/README.md.
#
#   bench/run.sh [--quick] [--rounds N] [--duration S] [--warmup S] [--refill] [--keep] [--no-pgo]
#
# Prints a markdown table on stdout and writes bench/results/<timestamp>.json.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/nginx.sh
source "$ROOT/bench/nginx.sh"
# shellcheck source=bench/build.sh
source "$ROOT/bench/build.sh"
# shellcheck source=scripts/loopback-certs.sh
source "$ROOT/scripts/loopback-certs.sh"

QUICK=0 REFILL=0 KEEP=0 PGO=1
ROUNDS='' DURATION='' WARMUP=''
while (($#)); do
    case $1 in
    --quick) QUICK=1 ;;
    --refill) REFILL=1 ;;
    --keep) KEEP=1 ;;
    --no-pgo) PGO=0 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    -h | --help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

if ((QUICK)); then
    : "${ROUNDS:=2}" "${DURATION:=2}" "${WARMUP:=0.5}"
    SIZES=(10000)
else
    : "${ROUNDS:=3}" "${DURATION:=5}" "${WARMUP:=1}"
    SIZES=(1 10000 1000000)
fi
MAIN_SIZE=${SIZES[-1]}
# Concurrency of the closed-loop throughput runs, as issue 7 asks.
CONNS=32
# Load generator threads: one per core.
THREADS=$(nproc)

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
# Filled state dirs are kept here and reused: a million keys take a while to write.
STATE_CACHE=$TARGET/bench-state
PORT_BASE=${BENCH_PORT_BASE:-18100}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS_DIR=$ROOT/bench/results
WORK=$(mktemp -d "${TMPDIR:-/tmp}/keygate-bench.XXXXXX")
RAW=$WORK/raw.jsonl
: >"$RAW"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR
# Whole seconds, at least 1: wrk and h2load take no fractions.
whole() { awk -v x="$1" 'BEGIN { c = int(x); if (c < x) c++; if (c < 1) c = 1; print c }'; }

# Background processes we started, stopped on any exit.
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if ((KEEP)); then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
# Drops a process we already stopped and reaped from the cleanup list.
forget() {
    local keep=() pid
    for pid in "${PIDS[@]}"; do
        [[ $pid == "$1" ]] || keep+=("$pid")
    done
    PIDS=("${keep[@]}")
}
trap 'exit 130' INT TERM

# --- tools -------------------------------------------------------------------------------------

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
    ((EUID == 0)) || die "missing ${missing[*]}: run as root, or apt-get install -y ${missing[*]}"
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

log "building the bench tools (release) in $TARGET"
CARGO_TARGET_DIR=$TARGET cargo build --release --locked --quiet \
    --example bench_upstream --example bench_client --example bench_fill
# Arm C is the binary keygate ships as: static, release profile, and profile-guided (PGO) unless
# --no-pgo or no llvm-profdata could be found (build-static.sh then says so).
log "building keygate as scripts/build-static.sh does (or reusing it)"
bench_keygate "$TARGET" "$PGO" "$WORK/build.log" ||
    die "the keygate build failed: $(tail -5 "$WORK/build.log")"
log "keygate: $KEYGATE_BUILD"
CLIENT=$BIN/examples/bench_client

# --- ports, readiness --------------------------------------------------------------------------

UP_PORT=$((PORT_BASE))
NGX_H1=$((PORT_BASE + 1)) NGX_H2C=$((PORT_BASE + 2)) NGX_TLS=$((PORT_BASE + 3))
STARTUP_PORT=$((PORT_BASE + 9))
kg_port() { echo $((PORT_BASE + 10 + 2 * $1)); }
kg_tls_port() { echo $((PORT_BASE + 11 + 2 * $1)); }

for port in "$UP_PORT" "$NGX_H1" "$NGX_H2C" "$NGX_TLS" "$STARTUP_PORT" \
    $(for i in "${!SIZES[@]}"; do kg_port "$i"; kg_tls_port "$i"; done); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is in use; set BENCH_PORT_BASE to a free range"
    fi
done

# Polls until URL answers any HTTP status, or fails after 60 s or when PID dies.
wait_http() {
    local url=$1 pid=$2 deadline=$((SECONDS + 60))
    until [[ $(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true) != 000 ]]; do
        kill -0 "$pid" 2>/dev/null || die "process $pid died before $url answered"
        ((SECONDS < deadline)) || die "$url did not answer within 60 s"
        sleep 0.02
    done
}

# --- TLS certificate, shared by nginx and keygate -----------------------------------------------

TLS=$WORK/tls
mkdir -p "$TLS"
loopback_certs "$TLS" || die "cannot make the TLS certificates with openssl"

# --- key stores --------------------------------------------------------------------------------

label() {
    case $1 in
    1) echo C-1 ;;
    10000) echo C-10k ;;
    1000000) echo C-1M ;;
    *) echo "C-$1" ;;
    esac
}

mkdir -p "$STATE_CACHE"
declare -A SECRET
for n in "${SIZES[@]}"; do
    dir=$STATE_CACHE/keys-$n
    if ((REFILL)) || [[ ! -s $dir/secret ]]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        log "filling a store with $n keys"
        "$BIN/examples/bench_fill" "$dir/state" "$n" >"$dir/secret.tmp"
        tail -n 1 "$dir/secret.tmp" >"$dir/secret"
        rm "$dir/secret.tmp"
    fi
    SECRET[$n]=$(<"$dir/secret")
done
KEY=${SECRET[$MAIN_SIZE]}

# keygate config for store size N on listener ports PLAIN and TLS_PORT (empty: none). Each in a
# directory of its own: keygate watches its config file's directory, and the files this script
# and the load tools write during the runs (h2load's per-request log) must not wake it.
kg_config() {
    local n=$1 plain=$2 tls_port=$3 file=$WORK/keygate-$1/keygate.toml
    mkdir -p "$WORK/keygate-$1"
    cat >"$file" <<EOF
[server]
state_dir = "$STATE_CACHE/keys-$n/state"

[admin]
socket = "$WORK/admin-$n.sock"

[[listeners]]
addr = "127.0.0.1:$plain"
EOF
    if [[ -n $tls_port ]]; then
        cat >>"$file" <<EOF

[[listeners]]
addr = "127.0.0.1:$tls_port"
tls_cert = "$TLS/cert.pem"
tls_key = "$TLS/key.pem"
EOF
    fi
    cat >>"$file" <<EOF

[limits]
# Far above any rate reached here: the bucket is taken on every request, never empty.
rate_limit = { requests = 100000000, interval = "1s" }

[log]
# An access log line per request would measure the terminal, not the proxy.
level = "warn"

[upstreams.bench]
base_url = "http://127.0.0.1:$UP_PORT"

[[routes]]
path = "/v1/"
upstream = "bench"
EOF
    echo "$file"
}

# --- memory and startup with the largest store --------------------------------------------------

STARTUP_JSON=$WORK/startup.jsonl
: >"$STARTUP_JSON"
startup_config=$(kg_config "$MAIN_SIZE" "$STARTUP_PORT" '')
log "startup and RSS of keygate serve with $MAIN_SIZE keys, 3 times"
for i in 1 2 3; do
    sock=$WORK/admin-$MAIN_SIZE.sock
    rm -f "$sock"
    t0=$(date +%s%N)
    "$KEYGATE" serve --config "$startup_config" >"$WORK/startup-$i.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    deadline=$((SECONDS + 120))
    until curl -sf --max-time 1 --unix-socket "$sock" http://keygate/api/status >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || die "keygate exited during startup: $(cat "$WORK/startup-$i.log")"
        ((SECONDS < deadline)) || die "keygate did not answer on its admin socket within 120 s"
        sleep 0.01
    done
    t1=$(date +%s%N)
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
    kill -TERM "$pid"
    wait "$pid" || true
    forget "$pid"
    printf '{"keys":%d,"startup_ms":%.1f,"rss_kib":%d,"hwm_kib":%d}\n' \
        "$MAIN_SIZE" "$(((t1 - t0) / 1000))e-3" "$rss" "$hwm" >>"$STARTUP_JSON"
done

# --- the arms ----------------------------------------------------------------------------------

log "starting the upstream, nginx and keygate"
"$BIN/examples/bench_upstream" "127.0.0.1:$UP_PORT" >"$WORK/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
wait_http "http://127.0.0.1:$UP_PORT/" "$UP_PID"

# One worker per core, like keygate's tokio workers.
nginx_config "$WORK/nginx" "$UP_PORT" auto "\
        listen 127.0.0.1:$NGX_H1;
        listen 127.0.0.1:$NGX_H2C http2;
        listen 127.0.0.1:$NGX_TLS ssl http2;
        ssl_certificate $TLS/cert.pem;
        ssl_certificate_key $TLS/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;"
"$NGINX" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" >"$WORK/nginx/stdout.log" 2>&1 &
NGX_PID=$!
PIDS+=("$NGX_PID")
wait_http "http://127.0.0.1:$NGX_H1/" "$NGX_PID"

declare -A KG_PID
for i in "${!SIZES[@]}"; do
    n=${SIZES[$i]}
    cfg=$(kg_config "$n" "$(kg_port "$i")" "$(kg_tls_port "$i")")
    "$KEYGATE" serve --config "$cfg" >"$WORK/keygate-$n.log" 2>&1 &
    KG_PID[$n]=$!
    PIDS+=("$!")
done
for i in "${!SIZES[@]}"; do
    n=${SIZES[$i]}
    wait_http "http://127.0.0.1:$(kg_port "$i")/healthz" "${KG_PID[$n]}"
done

# URL of ARM for PROTO (h1, h2) and TRANSPORT (plain, tls).
arm_url() {
    local arm=$1 proto=$2 transport=$3 i
    case $arm in
    A) echo "http://127.0.0.1:$UP_PORT$API" ;;
    B)
        if [[ $transport == tls ]]; then
            echo "https://localhost:$NGX_TLS$API"
        elif [[ $proto == h2 ]]; then
            echo "http://127.0.0.1:$NGX_H2C$API"
        else
            echo "http://127.0.0.1:$NGX_H1$API"
        fi
        ;;
    C-*)
        for i in "${!SIZES[@]}"; do
            [[ $(label "${SIZES[$i]}") == "$arm" ]] || continue
            if [[ $transport == tls ]]; then
                echo "https://localhost:$(kg_tls_port "$i")$API"
            else
                echo "http://127.0.0.1:$(kg_port "$i")$API"
            fi
        done
        ;;
    esac
}
arm_key() {
    local arm=$1 n
    for n in "${SIZES[@]}"; do
        [[ $(label "$n") == "$arm" ]] && { echo "${SECRET[$n]}"; return; }
    done
    echo "$KEY" # A and B get the same header; they ignore it.
}

API=/v1/chat/completions
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
printf '%s' "$BODY" >"$WORK/body.json"

# Every arm must answer the request with a 200 before anything is measured.
check_arm() {
    local arm=$1 code
    code=$(curl -sk --cacert "$TLS/ca.pem" -o "$WORK/check.out" -w '%{http_code}' \
        -H 'content-type: application/json' -H "authorization: Bearer $(arm_key "$arm")" \
        --data-binary @"$WORK/body.json" "$(arm_url "$arm" h1 plain)")
    [[ $code == 200 ]] || die "arm $arm answered $code: $(cat "$WORK/check.out")"
}

# --- one measurement: appends a JSON line to $RAW ----------------------------------------------

# measure ROUND SCENARIO KIND PROTO TRANSPORT ARM
measure() {
    local round=$1 scenario=$2 kind=$3 proto=$4 transport=$5 arm=$6
    local url key out
    url=$(arm_url "$arm" "$proto" "$transport")
    key=$(arm_key "$arm")
    local h2flag=()
    [[ $proto == h2 ]] && h2flag=(--h2)
    case $kind in
    closed)
        if [[ $proto == h1 ]]; then
            # wrk has no warm-up: a short unrecorded run first.
            sed "s|@KEY@|$key|" "$WORK/post.lua" >"$WORK/post-run.lua"
            wrk -t"$THREADS" -c"$CONNS" -d"$(whole "$WARMUP")s" -s "$WORK/post-run.lua" "$url" >/dev/null
            out=$(wrk -t"$THREADS" -c"$CONNS" -d"$(whole "$DURATION")s" -s "$WORK/post-run.lua" "$url" |
                grep '^{' | tail -n 1)
        else
            rm -f "$WORK/h2load.log"
            h2load -c"$CONNS" -m1 -t"$THREADS" -D "$(whole "$DURATION")" --warm-up-time="$(whole "$WARMUP")" \
                -d "$WORK/body.json" -H 'content-type: application/json' \
                -H "authorization: Bearer $key" --log-file="$WORK/h2load.log" "$url" \
                >"$WORK/h2load.out" 2>&1 || true
            out=$(python3 "$ROOT/bench/report.py" h2load "$WORK/h2load.out" "$WORK/h2load.log")
        fi
        ;;
    rate-*)
        out=$("$CLIENT" rate "$url" --rate "${kind#rate-}" "${h2flag[@]}" --ca "$TLS/ca.pem" \
            --key "$key" --duration "$DURATION" --warmup "$WARMUP")
        ;;
    seq | sse)
        out=$("$CLIENT" "$kind" "$url" "${h2flag[@]}" --ca "$TLS/ca.pem" \
            --key "$key" --duration "$DURATION" --warmup "$WARMUP")
        ;;
    esac
    printf '{"round":%d,"scenario":"%s","kind":"%s","proto":"%s","transport":"%s","arm":"%s","result":%s}\n' \
        "$round" "$scenario" "$kind" "$proto" "$transport" "$arm" "$out" >>"$RAW"
}

cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer @KEY@"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"count":%d,"duration_us":%d,"rps":%.1f,"errors":%d,"p50_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,"max_us":%.1f}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
EOF

# --- the plan: scenario | kind | proto | transport | arms ---------------------------------------

C=$(label "$MAIN_SIZE")
ALL_C=$(for n in "${SIZES[@]}"; do label "$n"; done | tr '\n' ' ')
if ((QUICK)); then
    PLAN=(
        "closed32 h1|closed|h1|plain|A B $C"
        "closed32 h2|closed|h2|plain|A B $C"
        "closed32 h1 tls|closed|h1|tls|B $C"
        "1k/s h1|rate-1000|h1|plain|A B $C"
        "seq 1conn h1|seq|h1|plain|A B $C"
        "sse 1conn h1|sse|h1|plain|A B $C"
    )
else
    PLAN=(
        "closed32 h1|closed|h1|plain|A B $ALL_C"
        "closed32 h2|closed|h2|plain|A B $C"
        "closed32 h1 tls|closed|h1|tls|B $C"
        "closed32 h2 tls|closed|h2|tls|B $C"
        "1k/s h1|rate-1000|h1|plain|A B $ALL_C"
        "1k/s h2|rate-1000|h2|plain|A B $C"
        "5k/s h1|rate-5000|h1|plain|A B $C"
        "5k/s h2|rate-5000|h2|plain|A B $C"
        "1k/s h1 tls|rate-1000|h1|tls|B $C"
        "1k/s h2 tls|rate-1000|h2|tls|B $C"
        "5k/s h1 tls|rate-5000|h1|tls|B $C"
        "5k/s h2 tls|rate-5000|h2|tls|B $C"
        "seq 1conn h1|seq|h1|plain|A B $C"
        "seq 1conn h2|seq|h2|plain|A B $C"
        "sse 1conn h1|sse|h1|plain|A B $C"
    )
fi

for arm in A B $ALL_C; do check_arm "$arm"; done

cat >"$WORK/meta.json" <<EOF
{"timestamp":"$STAMP","quick":$QUICK,"rounds":$ROUNDS,"duration_s":$DURATION,"warmup_s":$WARMUP,
 "connections":$CONNS,"load_threads":$THREADS,"sizes":[$(IFS=,; echo "${SIZES[*]}")],"main_arm":"$C",
 "machine":{"nproc":$(nproc),"cpu":"$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)",
   "mem_gib":$(awk '/MemTotal/ {printf "%.1f", $2/1048576}' /proc/meminfo),
   "kernel":"$(uname -r)","loadavg_at_start":"$(cut -d' ' -f1-3 /proc/loadavg)"},
 "versions":{"keygate_commit":"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)","keygate_build":"$KEYGATE_BUILD",
   "nginx":"$("$NGINX" -v 2>&1 | sed 's|.*/||')","wrk":"$( (wrk -v 2>&1 || true) | head -n 1 | awk '{print $2}')",
   "h2load":"$(h2load --version | awk '{print $NF}')","rustc":"$(rustc --version | awk '{print $2}')"}}
EOF

total=0
for entry in "${PLAN[@]}"; do
    IFS='|' read -r _ _ _ _ arms <<<"$entry"
    total=$((total + $(wc -w <<<"$arms")))
done
log "$ROUNDS rounds of $total measurements, ${DURATION}s each after ${WARMUP}s of warm-up"
for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round/$ROUNDS"
    for entry in "${PLAN[@]}"; do
        IFS='|' read -r scenario kind proto transport arms <<<"$entry"
        read -ra list <<<"$arms"
        # Rotate the order each round, so that no arm always runs first or last.
        for ((k = 0; k < ${#list[@]}; k++)); do
            arm=${list[$(((k + round - 1) % ${#list[@]}))]}
            measure "$round" "$scenario" "$kind" "$proto" "$transport" "$arm"
        done
    done
done

# RSS of each keygate after the load, for the record.
for n in "${SIZES[@]}"; do
    printf '{"keys":%d,"after_load_rss_kib":%d}\n' "$n" \
        "$(awk '/^VmRSS:/ {print $2}' "/proc/${KG_PID[$n]}/status")" >>"$STARTUP_JSON"
done

mkdir -p "$RESULTS_DIR"
python3 "$ROOT/bench/report.py" report "$WORK/meta.json" "$RAW" "$STARTUP_JSON" \
    "$RESULTS_DIR/$STAMP.json"
log "results in bench/results/$STAMP.json"
