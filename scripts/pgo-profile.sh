#!/usr/bin/env bash
# Makes the profile for a profile-guided (PGO) build of keygate: builds an instrumented keygate,
# runs it through a training load on loopback, and merges what it recorded into one file.
#
#   scripts/pgo-profile.sh OUT.profdata
#
# The instrumented binary is built with the caller's RUSTFLAGS (so that a static build trains a
# static binary) plus -Cprofile-generate, for --target x86_64-unknown-linux-gnu, in
# $CARGO_TARGET_DIR/pgo-generate (its own directory, kept between runs: other flags would
# rebuild everything). The training tools (examples/bench_upstream, bench_client, bench_fill)
# are built normally.
#
# The training load is the traffic keygate is built for, on every path the benchmark measures
# and a few it does not: chat completions over HTTP/1.1 and HTTP/2, plain and over TLS, at a
# fixed rate and one after another; SSE streams; Anthropic messages, whole and streamed, and
# OpenAI streams that did not ask for their usage; refusals (no key, a wrong key, a path with
# dot segments); a CORS preflight; /healthz. About 20 s.
#
# Needs llvm-profdata of the LLVM that rustc uses (rustup's llvm-tools, or Debian's llvm-N,
# which it installs with apt-get when run as root), curl, python3, and openssl (for the TLS
# part; skipped without it). Exits 3, having built and written nothing, when no usable
# llvm-profdata is found (or curl or python3 is missing); 1 when the build or the training fails.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:?usage: scripts/pgo-profile.sh OUT.profdata}
target=x86_64-unknown-linux-gnu
tdir=${CARGO_TARGET_DIR:-target}
say() { echo "pgo-profile: $*" >&2; }

# --- llvm-profdata of rustc's LLVM -------------------------------------------------------------

llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
host=$(rustc -vV | sed -n 's/^host: //p')
profdata() {
    local c
    for c in "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata" \
        "llvm-profdata-$llvm" "/usr/lib/llvm-$llvm/bin/llvm-profdata" llvm-profdata; do
        if command -v "$c" >/dev/null 2>&1 &&
            "$c" --version 2>/dev/null | grep -q "LLVM version $llvm\."; then
            echo "$c"
            return
        fi
    done
}
tool=$(profdata)
if [ -z "$tool" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing llvm-$llvm for llvm-profdata"
    apt-get install -y -qq "llvm-$llvm" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq "llvm-$llvm" >/dev/null 2>&1; } || true
    tool=$(profdata)
fi
if [ -z "$tool" ]; then
    say "no llvm-profdata for LLVM $llvm (rustup component add llvm-tools, or apt-get install llvm-$llvm)"
    exit 3
fi
for t in curl python3; do
    command -v "$t" >/dev/null || { say "$t is not installed"; exit 3; }
done
# RUSTFLAGS is split on spaces: a path in it must have none.
case "$(realpath -m "$tdir")" in
*[[:space:]]*) say "CARGO_TARGET_DIR has a space in it, which RUSTFLAGS cannot carry"; exit 1 ;;
esac

# --- builds --------------------------------------------------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/keygate-pgo.XXXXXX")
# Where the instrumented keygate writes its profile: a fixed path, so that RUSTFLAGS (and with
# them the instrumented build) stay the same from one run to the next.
raw=$(realpath -m "$tdir")/pgo-generate/raw
rm -rf "$raw"
up_pid='' kg=''
cleanup() {
    local p
    for p in $kg $up_pid; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $kg $up_pid; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "building the training tools and an instrumented keygate (LLVM $llvm)"
flags=${RUSTFLAGS:-}
# The caller's flags are for keygate (+crt-static, say), not for the tools' proc macros.
env -u RUSTFLAGS cargo build --release --locked --quiet \
    --example bench_upstream --example bench_client --example bench_fill
tools=$tdir/release/examples
CARGO_TARGET_DIR=$tdir/pgo-generate RUSTFLAGS="$flags -Cprofile-generate=$raw" \
    cargo build --release --locked --quiet --target "$target" --bin keygate
instrumented=$tdir/pgo-generate/$target/release/keygate

# --- training ------------------------------------------------------------------------------------

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
up=$(free_port) plain=$(free_port) tls=$(free_port)
"$tools/bench_upstream" "127.0.0.1:$up" >"$work/upstream.log" 2>&1 &
up_pid=$!
key=$("$tools/bench_fill" "$work/state" 1 2>/dev/null | tail -1)

tls_listener=''
# shellcheck source=scripts/loopback-certs.sh
source scripts/loopback-certs.sh
if command -v openssl >/dev/null && loopback_certs "$work"; then
    tls_listener="[[listeners]]
addr = \"127.0.0.1:$tls\"
tls_cert = \"$work/cert.pem\"
tls_key = \"$work/key.pem\""
else
    say "no TLS certificate (openssl is missing or failed): training without TLS"
fi

mkdir -p "$work/config"
cat >"$work/config/keygate.toml" <<EOF
[server]
state_dir = "$work/state"
# The refusals below come from this one address: they must not lock it out.
auth_failure_limit = { requests = 1000000, interval = "1s" }
[admin]
socket = "$work/admin.sock"
[[listeners]]
addr = "127.0.0.1:$plain"
$tls_listener
[limits]
rate_limit = { requests = 100000000, interval = "1s" }
[log]
level = "warn"
[upstreams.openai]
base_url = "http://127.0.0.1:$up"
[upstreams.anthropic]
base_url = "http://127.0.0.1:$up"
auth = "x-api-key"
[[routes]]
path = "/v1/messages"
upstream = "anthropic"
errors = "anthropic"
[[routes]]
path = "/v1/"
upstream = "openai"
EOF
"$instrumented" serve --config "$work/config/keygate.toml" >"$work/keygate.log" 2>&1 &
kg=$!
deadline=$((SECONDS + 60))
until curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$plain/healthz"; do
    kill -0 "$kg" 2>/dev/null || { say "keygate exited: $(tail -3 "$work/keygate.log")"; exit 1; }
    ((SECONDS < deadline)) || { say "keygate did not answer within 60 s"; exit 1; }
    sleep 0.1
done

say "training"
url=/v1/chat/completions
client() {
    "$tools/bench_client" "$@" --key "$key" --warmup 0 >/dev/null ||
        say "a training run reported errors: bench_client $1 ${*:2}"
}
client rate "http://127.0.0.1:$plain$url" --rate 2000 --duration 3
client rate "http://127.0.0.1:$plain$url" --rate 2000 --duration 2 --h2
client seq "http://127.0.0.1:$plain$url" --duration 1
client sse "http://127.0.0.1:$plain$url" --duration 2
if [ -n "$tls_listener" ]; then
    client rate "https://localhost:$tls$url" --rate 2000 --duration 2 --ca "$work/ca.pem"
    client rate "https://localhost:$tls$url" --rate 2000 --duration 2 --h2 --ca "$work/ca.pem"
fi
body='{"model":"claude-sonnet-4","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}'
c() { curl -s -o /dev/null --max-time 5 "$@" || true; }
for _ in $(seq 100); do
    c "http://127.0.0.1:$plain/v1/messages" -H "x-api-key: $key" \
        -H 'content-type: application/json' -d "$body"
    c "http://127.0.0.1:$plain$url" -d '{}'
    c "http://127.0.0.1:$plain$url" -H 'authorization: Bearer sk-kg-wrong' -d '{}'
    c --path-as-is "http://127.0.0.1:$plain/v1/../admin"
    c -X OPTIONS "http://127.0.0.1:$plain$url" \
        -H 'origin: https://app.example' -H 'access-control-request-method: POST'
    c "http://127.0.0.1:$plain/healthz"
done
# Streams in Anthropic's shape, and OpenAI streams that did not ask for their usage chunk
# (keygate asks for it, and cuts it out of what the client gets): ten at a time, each about
# 250 ms long.
a_stream='{"model":"claude-sonnet-4","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"Hi"}]}'
o_stream='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hi"}]}'
for _ in $(seq 4); do
    streams=()
    for _ in $(seq 5); do
        c "http://127.0.0.1:$plain/v1/messages" -H "x-api-key: $key" \
            -H 'content-type: application/json' -d "$a_stream" &
        streams+=($!)
        c "http://127.0.0.1:$plain$url" -H "authorization: Bearer $key" \
            -H 'content-type: application/json' -d "$o_stream" &
        streams+=($!)
    done
    wait "${streams[@]}"
done

# The profile is written when the instrumented process exits.
kill -TERM "$kg"
status=0
wait "$kg" || status=$?
kg=''
((status == 0)) || { say "keygate did not exit cleanly: $(tail -3 "$work/keygate.log")"; exit 1; }
"$tool" merge -o "$out" "$raw"
say "wrote $out ($(du -h "$out" | cut -f1))"
