#!/usr/bin/env bash
# Fuzzes the admin API against its OpenAPI document (docs/admin-openapi.yaml) with schemathesis.
#
# The admin API listens on a Unix socket only; schemathesis speaks TCP. So this starts a real
# `keygate serve` with a throw-away config and state dir, bridges its admin socket to a loopback
# port with socat (the socket's SO_PEERCRED check then sees socat, which runs as our own uid:
# allowed), and points schemathesis at that port. Everything is stopped and removed at the end.
#
# Needs: python3 (venv, pip; schemathesis is installed into .venv-schemathesis/, gitignored),
# socat (Debian: apt-get install socat), cargo (builds the debug binary if it is missing).
#
# Environment:
#   MAX_EXAMPLES=50      test cases per operation and phase
#   SEED=<n>             schemathesis --seed (default: a fixed seed, so runs are repeatable)
#   WORKERS=1            concurrent schemathesis workers
#   KEYGATE_BIN=path     the keygate binary (default: this checkout's debug build, built now)
#   SCHEMATHESIS_VERSION=4.32.5
#   KEEP=1               keep the temp dir (config, server log, reports) and print its path
#
# Checks: all of schemathesis's, less two that contradict keygate's documented design:
#   - positive_data_acceptance: schema-valid input can still be refused for rules a schema
#     cannot state (an instant in the past, CIDR syntax, "key or account but not both", a
#     zero duration, 744.0 where an integer is wanted); those answer 400, as documented.
#   - use_after_free: DELETE /api/keys/{id} revokes a key; the key stays readable (with
#     `revoked_at`) for its history, so a GET after DELETE answers 200 by design.
# Exit status: schemathesis's (0 only when every check passed), or 1 when the server logged a
# panic or answered a 5xx.
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXAMPLES=${MAX_EXAMPLES:-50}
SEED=${SEED:-20261122}
WORKERS=${WORKERS:-1}
VERSION=${SCHEMATHESIS_VERSION:-4.32.5}
VENV=.venv-schemathesis

command -v socat >/dev/null || { echo "socat is needed (apt-get install socat)" >&2; exit 2; }

if [ ! -x "$VENV/bin/schemathesis" ] || ! "$VENV/bin/schemathesis" --version | grep -q "$VERSION"; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi

TMP=$(mktemp -d)
SERVER_PID=
SOCAT_PID=
cleanup() {
    local rc=$?
    set +e
    [ -n "$SOCAT_PID" ] && kill "$SOCAT_PID" 2>/dev/null && wait "$SOCAT_PID" 2>/dev/null
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "kept: $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
# The binary under test: KEYGATE_BIN, else this checkout's debug build, copied at once (a
# target dir shared with other checkouts may be rebuilt from other sources during the run).
if [ -n "${KEYGATE_BIN:-}" ]; then
    cp "$KEYGATE_BIN" "$TMP/keygate"
else
    nice -n 10 cargo build --quiet --bin keygate
    cp "${CARGO_TARGET_DIR:-target}/debug/keygate" "$TMP/keygate"
fi
BIN=$TMP/keygate

mkdir -p "$TMP/run"
cat >"$TMP/keygate.toml" <<EOF
[server]
state_dir = "$TMP/state"

[admin]
socket = "$TMP/run/admin.sock"

[[listeners]]
addr = "127.0.0.1:0"

[limits]
rate_limit = { requests = 600, interval = "60s" }

# Nothing is proxied in this run; the upstream only gives routes and explain something to name.
[upstreams.openai]
base_url = "http://127.0.0.1:9"
api_key_env = "KEYGATE_SCHEMATHESIS_UPSTREAM_KEY"

[[routes]]
path = "/v1/models"
methods = ["GET"]
upstream = "openai"
scope = "read"

[[routes]]
path = "/v1/"
upstream = "openai"
scope = "chat"

[presets.bot]
upstream = "openai"
model = "gpt-4o-mini"
system_prompt = "Be brief."
EOF

KEYGATE_SCHEMATHESIS_UPSTREAM_KEY=not-a-real-key \
    "$BIN" serve --config "$TMP/keygate.toml" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    [ -S "$TMP/run/admin.sock" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/server.log" >&2; exit 1; }
    sleep 0.1
done
[ -S "$TMP/run/admin.sock" ] || { echo "the admin socket never appeared" >&2; exit 1; }

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
socat "TCP-LISTEN:$PORT,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$TMP/run/admin.sock" &
SOCAT_PID=$!
for _ in $(seq 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null && break
    sleep 0.1
done

start=$(date +%s)
status=0
"$VENV/bin/schemathesis" run docs/admin-openapi.yaml \
    --url "http://127.0.0.1:$PORT" \
    --checks all \
    --exclude-checks positive_data_acceptance,use_after_free \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --workers "$WORKERS" \
    --generation-database none \
    --report har,junit --report-dir "$TMP/report" \
    --no-color || status=$?
elapsed=$(( $(date +%s) - start ))

# What went over the wire, from the HAR log: requests in all, and any 5xx.
server_errors=0
python3 - "$TMP/report" "$elapsed" <<'EOF' || server_errors=1
import collections, glob, json, sys
entries = []
for path in glob.glob(sys.argv[1] + "/har-*.json"):
    with open(path) as f:
        entries += json.load(f)["log"]["entries"]
statuses = collections.Counter(e["response"]["status"] for e in entries)
print(f"schemathesis: {len(entries)} requests in {sys.argv[2]} s; statuses: "
      + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
errors = [e for e in entries if e["response"]["status"] >= 500]
for e in errors[:20]:
    print("5xx:", e["request"]["method"], e["request"]["url"], e["response"]["status"])
print(f"server errors (5xx): {len(errors)}")
sys.exit(1 if errors else 0)
EOF
if grep -q "panicked" "$TMP/server.log"; then
    echo "the server panicked:" >&2
    grep -A5 "panicked" "$TMP/server.log" >&2
    server_errors=1
fi
if [ "$status" = 0 ] && [ "$server_errors" = 1 ]; then status=1; fi
exit "$status"
