#!/usr/bin/env bash
# Load under attack (issue 8), part 2: HTTP/2 rapid reset (CVE-2023-44487) against keygate.
#
#   bench/attack/rapid_reset.sh [--rounds N] [--duration S] [--rate R] [--procs P]
#
# Starts the fake upstream and keygate (default config: h2_max_concurrent_streams 256; keygate
# allows 20 remotely reset streams waiting to be accepted per connection, then answers GOAWAY
# ENHANCE_YOUR_CALM), then, in each round, runs these phases of S seconds (default 15) while a
# legitimate client sends R requests/s (default 500; examples/bench_client.rs `rate --h2`, one h2c
# connection to keygate's [::1] listener, a valid key, POST /v1/chat/completions):
#   quiet   no attack: the baseline
#   burst   bench/attack/rapid_reset.py --batch 100: 100 HEADERS+RST_STREAM pairs per write
#   tight   --batch 1: one pair per write, as fast as python3-h2 goes
#   paced   --batch 5 --gap-ms 1: slow enough to stay under the limit of pending resets, so
#           that keygate does not close the connection
#   limited tight, with a key whose rate limit is 100/1s
# The attacker has a valid key of its own (no rate limit, except in `limited`) and POSTs to
# /v1/rapid-reset, so the fake upstream counts separately what reached it. For each phase it
# prints: attack streams/s, GOAWAYs and after how many streams (our count and the server's
# last_stream_id), keygate's CPU use (user+sys of its process over the phase), the requests and
# the TCP connections that reached the upstream (and the sockets in TIME-WAIT towards it at the
# end), the legitimate client's p50/p99 and errors, keygate's RSS; writes everything to
# bench/results/attack-rapid-reset-<UTC>.json.
#
# ATTACK_UPSTREAM_HOST=192.0.2.2 (any non-loopback address of this machine) puts the upstream
# there: Linux reuses TIME-WAIT ports early only between loopback addresses
# (net.ipv4.tcp_tw_reuse = 2), so this shows what keygate's connection churn would do against a
# real upstream.
#
# Needs python3-h2 for /usr/bin/python3 (apt-get install -y python3-h2, done here as root) and
# builds the release binaries into $CARGO_TARGET_DIR (ATTACK_NO_BUILD=1 skips), e.g.
#   CARGO_TARGET_DIR=/work/bench-target bench/attack/rapid_reset.sh
set -Eeuo pipefail

# shellcheck source=bench/attack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=2 DURATION=15 RATE=500 PROCS=1
while (($#)); do
    case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --procs) PROCS=$2; shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) die "unknown option $1 (try --help)" ;;
    esac
    shift
done
RAMP=2
WARMUP=1

need curl:curl "$PY:python3"
"$PY" -c 'import h2' 2>/dev/null || need /usr/lib/python3/dist-packages/h2:python3-h2
build
attack_setup ''
LEGIT_KEY=$(create_key legit)
ATTACK_KEY=$(create_key rapid-reset)
LIMITED_KEY=$(create_key rapid-reset-limited 100/1s)
[[ -n $LEGIT_KEY && -n $ATTACK_KEY && -n $LIMITED_KEY ]] || die "could not create the keys"
URL_LEGIT="http://[::1]:$KG6_PORT/v1/chat/completions"

declare -A VARIANT=(
    [burst]="--batch 100"
    [tight]="--batch 1"
    [paced]="--batch 5 --gap-ms 1"
    [limited]="--batch 1"
)

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$KG_PID/status"; }
# The fake upstream's counters as "requests chat_completions connections".
upstream_counts() {
    curl -sf --max-time 5 "http://$UP_HOST:$UP_PORT/bench/requests" | "$PY" -c \
        'import json,sys; j=json.load(sys.stdin); print(j["requests"], j["chat_completions"], j["connections"])'
}
time_wait() {
    ss -Htan state time-wait "( dport = :$UP_PORT )" | wc -l
}

phase() {
    local name=$1 tag="$1-$2" attack=0 pid=''
    [[ $name == quiet ]] || attack=1
    local t0 cpu0 up0 chat0 conns0 key=$ATTACK_KEY
    [[ $name != limited ]] || key=$LIMITED_KEY
    t0=$(date +%s.%N) cpu0=$(cpu_ticks "$KG_PID")
    read -r up0 chat0 conns0 < <(upstream_counts)
    if ((attack)); then
        # shellcheck disable=SC2086 # the variant's options are meant to split
        "$PY" "$ROOT/bench/attack/rapid_reset.py" --port "$KG_PORT" --key "$key" \
            --procs "$PROCS" --duration $((RAMP + WARMUP + DURATION + 1)) ${VARIANT[$name]} \
            >"$WORK/attacker-$tag.json" &
        pid=$!
        PIDS+=("$pid")
        sleep "$RAMP"
    fi
    "$BIN/examples/bench_client" rate "$URL_LEGIT" --h2 --key "$LEGIT_KEY" --rate "$RATE" \
        --duration "$DURATION" --warmup "$WARMUP" >"$WORK/legit-$tag.json" 2>"$WORK/legit-$tag.err" ||
        log "$tag: the legitimate client failed: $(cat "$WORK/legit-$tag.err")"
    [[ -s $WORK/legit-$tag.json ]] || echo '{"failed":true}' >"$WORK/legit-$tag.json"
    if [[ -n $pid ]]; then
        wait "$pid" || log "$tag: the attacker failed"
    fi
    local t1 cpu1 up1 chat1 conns1 tw
    t1=$(date +%s.%N) cpu1=$(cpu_ticks "$KG_PID") tw=$(time_wait)
    read -r up1 chat1 conns1 < <(upstream_counts)
    # The connections count includes the one that read it.
    printf '{"tag":"%s","variant":"%s","seconds":%s,"keygate_cpu_s":%s,"attack_upstream_requests":%d,"legit_upstream_requests":%d,"upstream_connections":%d,"time_wait":%d,"rss_kib":%d,"loadavg":"%s","alive":%s}\n' \
        "$tag" "$name" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" \
        "$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$(getconf CLK_TCK)" 'BEGIN{print (b-a)/hz}')" \
        $(((up1 - chat1) - (up0 - chat0))) $((chat1 - chat0)) $((conns1 - conns0 - 1)) "$tw" \
        "$(rss_kib)" "$(loadavg)" \
        "$(kill -0 "$KG_PID" 2>/dev/null && echo true || echo false)" >"$WORK/phase-$tag.json"
    log "$tag: $(cat "$WORK/phase-$tag.json")"
}

log "keygate RSS at start: $(rss_kib) KiB"
"$BIN/examples/bench_client" rate "$URL_LEGIT" --h2 --key "$LEGIT_KEY" --rate "$RATE" \
    --duration 3 --warmup 0 >/dev/null
log "load average before: $(loadavg)"
for r in $(seq "$ROUNDS"); do
    wait_idle
    for name in quiet burst tight paced limited; do
        phase "$name" "$r"
        # TIME-WAIT sockets of one phase must not weigh on the next (they last 60 s).
        while (($(time_wait) > 1000)); do sleep 5; done
        sleep 1
    done
done
log "load average after: $(loadavg)"
metrics "$SOCK" | grep -E '^keygate_requests_total' >"$WORK/metrics-end.txt" || true
grep -c 'pending-accept streams reached limit' "$WORK/keygate.log" >"$WORK/goaway-warnings.txt" || true

mkdir -p "$ROOT/bench/results"
OUT=$ROOT/bench/results/attack-rapid-reset-$(date -u +%Y%m%dT%H%M%SZ).json
"$PY" "$ROOT/bench/attack/report.py" rapid_reset "$WORK" "$OUT" --rate "$RATE" --procs "$PROCS"
log "wrote $OUT"
