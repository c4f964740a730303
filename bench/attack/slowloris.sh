#!/usr/bin/env bash
# Load under attack (issue 8), part 1: does a legitimate client keep its latency while keygate is
# under slow-connection and malformed-request attacks?
#
#   bench/attack/slowloris.sh [--rounds N] [--duration S] [--rate R] [--conns C] [--flood-rate F]
#                             [--max-connections M] [--pin]
#
# Measures the p99 latency of a legitimate open-loop load (examples/bench_client.rs `rate`: R
# requests/s, default 800, HTTP/1.1 over 32 keep-alive connections, a valid key, POST
# /v1/chat/completions to the fake upstream examples/bench_upstream.rs), first quiet, then while
# these run at the same time against the same keygate:
#   - slowhttptest -H (slowloris): C connections (default 300) sending a header line every 3 s,
#     restarted whenever keygate has closed them all;
#   - slowhttptest -B (slow body): C connections each POSTing a JSON body of 8 KiB a few bytes
#     every 2 s, with a valid key of its own (rate limit 60/60s; injected through -j);
#   - bench/attack/flood.py: F requests/s (default 300), each on a new connection, of oversized
#     headers (431), oversized bodies (413), malformed requests (400) and invalid keys (401,
#     then 429 from the failed-authentication guard).
# Throughout each phase a probe also opens a new connection every 0.5 s (curl to [::1], one
# request, 5 s at most), which shows whether keygate still accepts connections.
#
# Each round (default 2, of 20 s phases) has three phases: quiet (no attack), attack (the
# attackers against keygate) and control (the same attackers against a decoy: a second keygate
# with the same config and upstream, on the same machine). On 2 cores the attackers' own CPU
# slows the legitimate client whoever they attack; the control shows how much of the
# under-attack p99 is that, and how much is keygate itself. Prints the median p99 of each kind
# of phase, the ratio under attack ÷ quiet against the target (≤ 2×), control ÷ quiet and
# attack ÷ control, and what the attackers got back; writes everything to
# bench/results/attack-slowloris-<UTC>.json.
#
# --pin keeps the two sides off each other's CPUs, as if the attackers were other machines:
# keygate, the upstream, the legitimate client and the probe on CPU 0 (all but the last CPU),
# the attackers and the decoy on the last CPU (taskset). The attackers' CPU use is reported per
# phase either way (slowhttptest alone takes about 0.4 CPU per instance here).
#
# Client IPs: the legitimate client connects to keygate's [::1] listener, the attackers to
# 127.0.0.1 (slowhttptest, which cannot bind) and from 127.0.0.2/127.0.0.3 (flood.py), so the
# per-IP failed-authentication guard (server.auth_failure_limit, left at its default of 20/60s)
# blocks the attackers without touching the legitimate client, as with real, distinct clients.
#
# Config: keygate's defaults (header_read_timeout 10s, idle_timeout 60s, max_header_bytes 16384,
# max_headers 100, max_connections 10000) except max_body_bytes = 1 MiB, so that each oversized
# chunked body costs the attacker 1 MiB, not 10; --max-connections M sets server.max_connections
# (below 2×C the slow connections alone fill it, which the probe shows). Needs slowhttptest
# (apt-get install -y slowhttptest), curl, ss; builds the release binaries into
# $CARGO_TARGET_DIR (set ATTACK_NO_BUILD=1 to skip), e.g.
#   CARGO_TARGET_DIR=/work/bench-target bench/attack/slowloris.sh
set -Eeuo pipefail

# shellcheck source=bench/attack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=2 DURATION=20 RATE=800 CONNS=300 FLOOD_RATE=300 MAX_CONNECTIONS='' PIN=0
while (($#)); do
    case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --conns) CONNS=$2; shift ;;
    --flood-rate) FLOOD_RATE=$2; shift ;;
    --max-connections) MAX_CONNECTIONS=$2; shift ;;
    --pin) PIN=1 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) die "unknown option $1 (try --help)" ;;
    esac
    shift
done
# Attackers start this long before the legitimate load, so that it meets them at full strength.
RAMP=5
WARMUP=1
MAX_BODY=1048576

need slowhttptest:slowhttptest curl:curl ss:iproute2 "$PY:python3" taskset:util-linux
# Command prefixes that put a process on the serving side's CPUs or on the attackers' CPU.
SERVE=() ATTACK=() SERVE_CPUS='' ATTACK_CPUS=''
if ((PIN)); then
    last=$(($(nproc) - 1))
    ((last >= 1)) || die "--pin needs at least 2 CPUs"
    SERVE_CPUS=0-$((last - 1)) ATTACK_CPUS=$last
    SERVE=(taskset -c "$SERVE_CPUS") ATTACK=(taskset -c "$ATTACK_CPUS")
fi
# pin PID CPUS: moves every thread of process PID to CPUS (nothing if CPUS is empty).
pin() {
    [[ -n $2 ]] || return 0
    taskset -a -p -c "$2" "$1" >/dev/null
}
build
SERVER="max_body_bytes = $MAX_BODY"
[[ -z $MAX_CONNECTIONS ]] || SERVER+=$'\n'"max_connections = $MAX_CONNECTIONS"
attack_setup "$SERVER"
pin "$KG_PID" "$SERVE_CPUS"
pin "$UP_PID" "$SERVE_CPUS"
LEGIT_KEY=$(create_key legit)
declare -A PORT SOCKET FLOOD_KEY SLOW_KEY
PORT[keygate]=$KG_PORT SOCKET[keygate]=$SOCK
# The decoy: a second keygate, same config and upstream, that the control phases attack.
start_keygate decoy "$SERVER"
pin "$STARTED_PID" "$ATTACK_CPUS"
PORT[decoy]=$STARTED_PORT SOCKET[decoy]=$STARTED_SOCK
log "decoy keygate (pid $STARTED_PID) on 127.0.0.1:$STARTED_PORT"
for target in keygate decoy; do
    FLOOD_KEY[$target]=$(create_key flood-keyed 100000000/1s "${SOCKET[$target]}")
    SLOW_KEY[$target]=$(create_key slow-body 60/60s "${SOCKET[$target]}")
    [[ -n ${FLOOD_KEY[$target]} && -n ${SLOW_KEY[$target]} ]] || die "could not create the keys"
done
[[ -n $LEGIT_KEY ]] || die "could not create the keys"
URL_LEGIT="http://[::1]:$KG6_PORT/v1/chat/completions"

# Status counts of keygate_requests_total of the keygate with admin socket $1, as "status
# count" lines.
statuses() {
    metrics "$1" | awk '/^keygate_requests_total\{/ {
        match($0, /status="[0-9]+"/); s = substr($0, RSTART + 8, 3); n[s] += $NF }
        END { for (s in n) print s, n[s] }' | sort
}

# Runs slowhttptest MODE ARGS... again and again until DEADLINE (epoch seconds); each run's
# CSV goes to $WORK/slow-TAG-N.csv and its last status line to $WORK/slow-TAG-N.exit.
slow_loop() {
    local tag=$1 deadline=$2 i=0 child=''
    shift 2
    trap '[[ -n $child ]] && kill "$child" 2>/dev/null; exit 0' TERM
    while (($(date +%s) < deadline - 2)); do
        i=$((i + 1))
        # The CPU it used (user and system seconds) goes to slow-TAG-N.cpu.
        (
            TIMEFORMAT='%U %S'
            time "${ATTACK[@]}" slowhttptest "$@" -l $((deadline - $(date +%s))) -g -o "$WORK/slow-$tag-$i" \
                >"$WORK/slow-$tag-$i.out" 2>&1
        ) 2>"$WORK/slow-$tag-$i.cpu" &
        child=$!
        wait "$child" || true
        child=''
        sed 's/\x1b\[[0-9;]*m//g' "$WORK/slow-$tag-$i.out" | sed -n 's/^Exit status: *//p' \
            >"$WORK/slow-$tag-$i.exit" || true
    done
}

# Samples the open connections of port $2 (the attacked listener) and keygate's CPU once a
# second into $WORK/samples-TAG until killed.
sampler() {
    local tag=$1 port=$2
    while :; do
        printf '%s %s %s\n' "$(date +%s.%N)" "$(open_conns "$port")" "$(cpu_ticks "$KG_PID")" \
            >>"$WORK/samples-$tag"
        sleep 1
    done
}

# A new connection and one request every 0.5 s, into $WORK/probe-TAG: "seconds http_code" per
# line (000: no answer within 5 s).
prober() {
    local tag=$1
    while :; do
        "${SERVE[@]}" curl -s -o /dev/null --max-time 5 -w '%{time_total} %{http_code}\n' \
            -H "authorization: Bearer $LEGIT_KEY" -H 'content-type: application/json' \
            -d '{"model":"gpt-4o-mini","messages":[]}' "$URL_LEGIT" >>"$WORK/probe-$tag" || true
        sleep 0.5
    done
}

legit() {
    "${SERVE[@]}" "$BIN/examples/bench_client" rate "$URL_LEGIT" --key "$LEGIT_KEY" --rate "$RATE" \
        --duration "$DURATION" --warmup "$WARMUP" >"$WORK/legit-$1.json" 2>"$WORK/legit-$1.err" ||
        die "the legitimate client failed: $(cat "$WORK/legit-$1.err")"
}

# phase TAG TARGET: the legitimate load against keygate, while TARGET (keygate, decoy, or
# none) is attacked.
phase() {
    local tag=$1 target=$2 attack=1 before after pids=() sp pp port url
    [[ $target != none ]] || attack=0
    port=${PORT[${target/none/keygate}]}
    url="http://127.0.0.1:$port/v1/chat/completions"
    statuses "$SOCK" >"$WORK/status-before-$tag"
    [[ $target != decoy ]] || statuses "${SOCKET[decoy]}" >"$WORK/decoy-status-before-$tag"
    local t0 up0 cpu0
    t0=$(date +%s.%N) up0=$(upstream_count requests) cpu0=$(cpu_ticks "$KG_PID")
    sampler "$tag" "$port" &
    sp=$!
    prober "$tag" &
    pp=$!
    PIDS+=("$sp" "$pp")
    if ((attack)); then
        local deadline=$(($(date +%s) + RAMP + WARMUP + DURATION + 2))
        slow_loop "H-$tag" "$deadline" -H -c "$CONNS" -r 100 -i 3 -x 24 -p 3 -u "$url" &
        pids+=($!)
        slow_loop "B-$tag" "$deadline" -B -c "$CONNS" -r 100 -i 2 -x 16 -s 8192 -p 3 \
            -f application/json -j $'k=v\r\nAuthorization: Bearer '"${SLOW_KEY[$target]}" -u "$url" &
        pids+=($!)
        "${ATTACK[@]}" "$PY" "$ROOT/bench/attack/flood.py" --port "$port" --key "${FLOOD_KEY[$target]}" \
            --max-body "$MAX_BODY" --rate "$FLOOD_RATE" \
            --duration $((RAMP + WARMUP + DURATION + 1)) >"$WORK/flood-$tag.json" &
        pids+=($!)
        PIDS+=("${pids[@]}")
        sleep "$RAMP"
        log "$tag: attack on $target running, $(open_conns "$port") connections open on the attacked listener"
    fi
    legit "$tag"
    if ((attack)); then
        log "$tag: legitimate load done; $(open_conns "$port") attack connections open; waiting for the attackers"
        wait "${pids[@]}" || true
    fi
    kill "$sp" "$pp" 2>/dev/null || true
    wait "$sp" "$pp" 2>/dev/null || true
    local t1 up1 cpu1
    t1=$(date +%s.%N) up1=$(upstream_count requests) cpu1=$(cpu_ticks "$KG_PID")
    statuses "$SOCK" >"$WORK/status-after-$tag"
    [[ $target != decoy ]] || statuses "${SOCKET[decoy]}" >"$WORK/decoy-status-after-$tag"
    printf '{"tag":"%s","attack":%d,"target":"%s","seconds":%s,"upstream_requests":%d,"keygate_cpu_s":%s,"loadavg":"%s"}\n' \
        "$tag" "$attack" "$target" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" $((up1 - up0)) \
        "$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$(getconf CLK_TCK)" 'BEGIN{print (b-a)/hz}')" \
        "$(loadavg)" >"$WORK/phase-$tag.json"
    before=$(tr '\n' ' ' <"$WORK/status-before-$tag") after=$(tr '\n' ' ' <"$WORK/status-after-$tag")
    log "$tag: p99 $("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["p99_us"])' "$WORK/legit-$tag.json") µs; keygate statuses before [$before] after [$after]"
}

# Warms keygate's connection pools and caches; not reported.
"${SERVE[@]}" "$BIN/examples/bench_client" rate "$URL_LEGIT" --key "$LEGIT_KEY" --rate "$RATE" --duration 3 \
    --warmup 0 >/dev/null
log "load average before: $(loadavg)"
for r in $(seq "$ROUNDS"); do
    wait_idle
    phase "quiet-$r" none
    sleep 2
    phase "attack-$r" keygate
    # Let the attack connections die down (slow bodies are held by keygate until their
    # client goes away, which the loops above made them do).
    sleep 3
    phase "control-$r" decoy
    sleep 3
done
log "load average after: $(loadavg)"

mkdir -p "$ROOT/bench/results"
OUT=$ROOT/bench/results/attack-slowloris-$(date -u +%Y%m%dT%H%M%SZ).json
"$PY" "$ROOT/bench/attack/report.py" slowloris "$WORK" "$OUT" \
    --rate "$RATE" --conns "$CONNS" --flood-rate "$FLOOD_RATE" --duration "$DURATION" --pin "$PIN"
log "wrote $OUT"
