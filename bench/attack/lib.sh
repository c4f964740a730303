# shellcheck shell=bash
# Helpers shared by the bench/attack/ scripts and bench/cpu.sh (sourced, not run; BENCH_TAG,
# default "attack", names their log lines and temp dir): build the release binaries,
# start the fake upstream (examples/bench_upstream.rs) and keygate on free loopback ports with a
# config of our own, create keys over the admin socket, read counters, clean up on exit.
#
# After `build`: $KEYGATE (the binary under test) and $KEYGATE_BUILD (how it was built).
# After `attack_setup`: $WORK (temp dir), $BIN (release dir), $KEYGATE, $UP_HOST, $UP_PORT, $KG_PORT (plain
# listener on 127.0.0.1), $KG6_PORT (plain listener on [::1]), $SOCK (admin socket), $KG_PID.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
KEYGATE=$BIN/keygate
# The system python has python3-h2 (Debian package); a pyenv shim on PATH may not.
PY=${ATTACK_PYTHON:-/usr/bin/python3}
KEEP=${ATTACK_KEEP:-0}
# Where the fake upstream listens. Linux reuses TIME-WAIT ports early only between loopback
# addresses (net.ipv4.tcp_tw_reuse = 2), so a non-loopback address of this machine shows what
# keygate's connection churn to a real, remote upstream would do to its ephemeral ports.
UP_HOST=${ATTACK_UPSTREAM_HOST:-127.0.0.1}

BENCH_TAG=${BENCH_TAG:-attack}
log() { printf '[%s %s] %s\n' "$BENCH_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/keygate-$BENCH_TAG.XXXXXX")
PIDS=()
attack_cleanup() {
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
trap attack_cleanup EXIT
trap 'exit 130' INT TERM

# Installs the Debian packages named for the commands that are missing: "cmd:package ...".
need() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || [[ -x ${pair%%:*} ]] || missing+=("${pair#*:}")
    done
    ((${#missing[@]})) || return 0
    ((EUID == 0)) || die "missing ${missing[*]}: apt-get install -y ${missing[*]}"
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# shellcheck source=bench/build.sh
source "$ROOT/bench/build.sh"
KEYGATE_BUILD=release

# Builds the bench tools, and keygate as it ships (bench/build.sh: static, PGO unless
# BENCH_PGO=0; not with SKIP_KEYGATE_BUILD=1, for a caller that measures a binary of its own).
# ATTACK_NO_BUILD=1 builds nothing: it uses the last shipped-style build if that is still what
# the tree makes, else the plain release binary.
build() {
    if [[ ${ATTACK_NO_BUILD:-0} == 1 ]]; then
        bench_keygate_reuse "$TARGET" "${BENCH_PGO:-1}" || true
        return
    fi
    log "building the bench tools (release) in $TARGET"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet \
        --example bench_upstream --example bench_fill --example bench_client)
    [[ ${SKIP_KEYGATE_BUILD:-0} == 1 ]] && return
    log "building keygate as scripts/build-static.sh does (or reusing it)"
    bench_keygate "$TARGET" "${BENCH_PGO:-1}" "$WORK/build.log" ||
        die "the keygate build failed: $(tail -5 "$WORK/build.log")"
    log "keygate: $KEYGATE_BUILD"
}

# A free TCP port on HOST (default 127.0.0.1).
free_port() {
    "$PY" -c 'import socket,sys; s=socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "${1:-127.0.0.1}"
}

# Polls URL until it answers any HTTP status; dies after 30 s or when PID exits.
wait_http() {
    local url=$1 pid=$2 deadline=$((SECONDS + 30))
    until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true) != 000 ]]; do
        kill -0 "$pid" 2>/dev/null || die "process $pid died before $url answered"
        ((SECONDS < deadline)) || die "$url did not answer within 30 s"
        sleep 0.05
    done
}

# start_keygate NAME EXTRA_SERVER_TOML: starts a keygate with state, config, admin socket and log
# named after NAME in $WORK, on two free ports (127.0.0.1 and [::1]), routing /v1/ to the fake
# upstream. EXTRA_SERVER_TOML is added to its [server] section (limits, timeouts); keygate's
# defaults apply to everything else. Sets STARTED_PORT, STARTED_PORT6, STARTED_SOCK, STARTED_PID.
start_keygate() {
    local name=$1 extra=${2:-}
    STARTED_PORT=$(free_port)
    STARTED_PORT6=$(free_port ::1)
    STARTED_SOCK=$WORK/$name.sock
    mkdir -p "$WORK/state-$name"
    cat >"$WORK/$name.toml" <<EOF
[server]
state_dir = "$WORK/state-$name"
$extra

[admin]
socket = "$STARTED_SOCK"

# Two listeners, so that the legitimate client (on [::1]) and the attackers (on 127.0.0.x) are
# different client IPs for the per-IP failed-authentication guard, as they would be for real.
[[listeners]]
addr = "127.0.0.1:$STARTED_PORT"

[[listeners]]
addr = "[::1]:$STARTED_PORT6"

[log]
# An access-log line per request would measure the terminal; refusals are logged at info.
level = "warn"

[upstreams.bench]
base_url = "http://$UP_HOST:$UP_PORT"

[[routes]]
path = "/v1/"
upstream = "bench"
EOF
    "$KEYGATE" serve --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    wait_http "http://127.0.0.1:$STARTED_PORT/healthz" "$STARTED_PID"
}

# attack_setup EXTRA_SERVER_TOML: starts the upstream and keygate (start_keygate keygate ...).
attack_setup() {
    local extra=${1:-}
    UP_PORT=$(free_port "$UP_HOST")
    "$BIN/examples/bench_upstream" "$UP_HOST:$UP_PORT" >"$WORK/upstream.log" 2>&1 &
    UP_PID=$!
    PIDS+=("$UP_PID")
    wait_http "http://$UP_HOST:$UP_PORT/bench/requests" "$UP_PID"
    start_keygate keygate "$extra"
    KG_PORT=$STARTED_PORT KG6_PORT=$STARTED_PORT6 SOCK=$STARTED_SOCK KG_PID=$STARTED_PID
    log "upstream on $UP_HOST:$UP_PORT, keygate (pid $KG_PID) on 127.0.0.1:$KG_PORT and [::1]:$KG6_PORT"
}

# create_key NAME [RATE [SOCKET]]: prints the secret of a new key; RATE like 1000/1s (default:
# far above anything sent here, 100000000/1s); SOCKET: another keygate's admin socket.
create_key() {
    "$KEYGATE" --socket "${3:-$SOCK}" keys create --name "$1" --rate "${2:-100000000/1s}" \
        2>/dev/null | tail -n 1
}

# The number of requests that reached the fake upstream, all of them or (with an argument,
# chat_completions) those to /v1/chat/completions.
upstream_count() {
    curl -sf --max-time 5 "http://$UP_HOST:$UP_PORT/bench/requests" |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "${1:-requests}"
}

# keygate's Prometheus text, from its admin socket (or from socket $1).
metrics() {
    curl -sf --max-time 5 --unix-socket "${1:-$SOCK}" http://keygate/metrics
}

# Sum of keygate_requests_total samples whose labels contain STATUS="…", e.g. status="429".
requests_with() {
    metrics "$SOCK" | awk -v want="$1" '/^keygate_requests_total\{/ && index($0, want) { s += $NF } END { printf "%d\n", s }'
}

# CPU ticks (user + system, in clock ticks) a process has used so far.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# Open TCP connections to keygate's plain IPv4 listener (or to port $1), as the kernel sees them.
open_conns() {
    ss -Htn state established "( sport = :${1:-$KG_PORT} )" 2>/dev/null | wc -l
}

loadavg() {
    cut -d' ' -f1-3 /proc/loadavg
}

# Busy share of all CPUs, in percent, over the next SECONDS (default 2). Niced work (a fuzzer,
# say) counts as idle: it yields to the measurement.
cpu_busy() {
    local a b
    a=$(awk '/^cpu / { print $2+$4+$7+$8, $3+$5+$6 }' /proc/stat)
    sleep "${1:-2}"
    b=$(awk '/^cpu / { print $2+$4+$7+$8, $3+$5+$6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x); split(b, y); busy = y[1] - x[1]; idle = y[2] - x[2];
        printf "%d\n", (busy + idle) ? 100 * busy / (busy + idle) : 0 }'
}

# On a shared machine: waits (up to $ATTACK_IDLE_WAIT seconds, default 120) until the CPUs are
# less than $ATTACK_IDLE_BUSY percent busy (default 30) for two samples in a row, so that a
# measurement does not start in the middle of someone else's build. Goes on regardless after
# the wait, saying so. ATTACK_IDLE_WAIT=0 skips it.
wait_idle() {
    local max=${ATTACK_IDLE_WAIT:-120} limit=${ATTACK_IDLE_BUSY:-30} start=$SECONDS ok=0 busy
    ((max > 0)) || return 0
    while ((SECONDS - start < max)); do
        busy=$(cpu_busy 2)
        if ((busy < limit)); then
            ok=$((ok + 1))
            ((ok >= 2)) && return 0
        else
            ok=0
        fi
    done
    log "the machine stayed busy (${busy}% CPU) for ${max} s; measuring anyway"
}
