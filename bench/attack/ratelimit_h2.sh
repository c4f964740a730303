#!/usr/bin/env bash
# Load under attack (issue 8), part 3: is a key's request rate limit exact when one client
# hammers it over many multiplexed HTTP/2 streams?
#
#   bench/attack/ratelimit_h2.sh [--limit N/INTERVAL]... [--duration S] [--clients C] [--streams M]
#
# For each limit (default three: 1000/1s, 100/100ms and 3000/10s, i.e. 1,000, 1,000 and 300
# requests/s with bursts of 1,000, 100 and 3,000), creates a fresh key with that rate limit over keygate's admin
# socket, then runs `h2load -c C -m M -D S` (default 100 connections × 100 concurrent streams
# for 20 s, h2c with prior knowledge) of POST /v1/chat/completions with that key against keygate
# and the fake upstream, far above the limit. Compares the requests keygate let through with the
# most the bucket can give:
#   expected = burst + rate × elapsed
# keygate's bucket is GCRA: N per INTERVAL, starting full, so a burst of N, then one every
# INTERVAL/N. "Allowed" is what reached the upstream (every admitted request is forwarded; the
# upstream counts them, and keygate_requests_total's 200s and h2load's log cross-check it), and
# "elapsed" runs from the first admitted request's arrival at the upstream to the last one's: the
# time the bucket was being drained, free of h2load's queueing at the start and end (h2load's
# first send to its last answer is also shown, as an upper bound). The 429s come from keygate's
# keygate_requests_total. Target: allowed within 1% of expected. Prints expected, allowed and
# the error per limit; writes everything to bench/results/attack-ratelimit-h2-<UTC>.json.
#
# Needs h2load (nghttp2-client); builds the release binaries into $CARGO_TARGET_DIR
# (ATTACK_NO_BUILD=1 skips), e.g.
#   CARGO_TARGET_DIR=/work/bench-target bench/attack/ratelimit_h2.sh
set -Eeuo pipefail

# shellcheck source=bench/attack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LIMITS=() DURATION=20 CLIENTS=100 STREAMS=100
while (($#)); do
    case $1 in
    --limit) LIMITS+=("$2"); shift ;;
    --duration) DURATION=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --streams) STREAMS=$2; shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) die "unknown option $1 (try --help)" ;;
    esac
    shift
done
# Offered load must stay far above each rate: on 2 cores keygate forwards a few thousand
# requests/s at most next to h2load, so the defaults stay at 1,000/s and below.
((${#LIMITS[@]})) || LIMITS=(1000/1s 100/100ms 3000/10s)

need h2load:nghttp2-client curl:curl "$PY:python3"
build
attack_setup ''
BODY=$WORK/body.json
printf '%s' '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}' >"$BODY"
# The file descriptors h2load and keygate need for 100+ connections.
ulimit -n 65536 2>/dev/null || true

statuses() {
    metrics "$SOCK" | awk '/^keygate_requests_total\{/ {
        match($0, /status="[0-9]+"/); s = substr($0, RSTART + 8, 3); n[s] += $NF }
        END { printf "{"; sep = ""; for (s in n) { printf "%s\"%s\":%d", sep, s, n[s]; sep = "," }
              print "}" }'
}

i=0
for limit in "${LIMITS[@]}"; do
    i=$((i + 1))
    key=$(create_key "ratelimit-$i" "$limit")
    [[ -n $key ]] || die "could not create a key with rate $limit"
    # No warm-up request: it would take a unit from the bucket, which starts full at the key's
    # first request, h2load's first.
    wait_idle
    curl -sf -X POST "http://$UP_HOST:$UP_PORT/bench/reset" >/dev/null
    before=$(statuses) la0=$(loadavg)
    log "limit $limit: h2load -c $CLIENTS -m $STREAMS -D $DURATION (load average $la0)"
    h2load -c "$CLIENTS" -m "$STREAMS" -D "$DURATION" -t "$(nproc)" -d "$BODY" \
        -H "authorization: Bearer $key" -H 'content-type: application/json' \
        --log-file "$WORK/h2load-$i.log" "http://127.0.0.1:$KG_PORT/v1/chat/completions" \
        >"$WORK/h2load-$i.out" 2>&1 || log "h2load exited with an error: $(tail -n 3 "$WORK/h2load-$i.out")"
    # Answers still in flight when h2load stopped finish within keygate; let them be counted.
    sleep 1
    after=$(statuses) upstream=$(curl -sf "http://$UP_HOST:$UP_PORT/bench/requests")
    printf '{"limit":"%s","before":%s,"after":%s,"upstream":%s,"loadavg":"%s / %s"}\n' \
        "$limit" "$before" "$after" "$upstream" "$la0" "$(loadavg)" >"$WORK/run-$i.json"
    grep -E '^(finished|requests|status codes):' "$WORK/h2load-$i.out" | sed 's/^/    /' >&2
done

mkdir -p "$ROOT/bench/results"
OUT=$ROOT/bench/results/attack-ratelimit-h2-$(date -u +%Y%m%dT%H%M%SZ).json
"$PY" "$ROOT/bench/attack/report.py" ratelimit "$WORK" "$OUT" --clients "$CLIENTS" \
    --streams "$STREAMS" --duration "$DURATION"
log "wrote $OUT"
