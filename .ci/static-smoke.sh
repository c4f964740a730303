#!/usr/bin/env bash
# CI: builds the static keygate binary (profile ci-static) and runs it end to end the way an
# operator would: --version, `config check`, `serve` in an empty environment, the admin CLI over
# the socket (status, keys create), a keyed request, then SIGTERM and a clean exit.
#
#   .ci/static-smoke.sh                           # build with --profile ci-static, then run
#   KEYGATE_STATIC_PROFILE=release .ci/static-smoke.sh    # build (and test) the release binary
#   KEYGATE_STATIC_BIN=dist/keygate .ci/static-smoke.sh   # run a binary built already
#   KEYGATE_SMOKE_SYSCALLS=1 .ci/static-smoke.sh  # also strace the server and check every
#                                                 # system call it made is allowed by the unit's
#                                                 # SystemCallFilter= (needs strace, systemd-analyze)
#
# Run as root (as CI is), every keygate command runs in a chroot holding nothing but the binary,
# its config and its state: no /dev, /proc, /etc, shared libraries or environment. Otherwise
# (or with KEYGATE_SMOKE_CHROOT=0) it runs in place, with an empty environment only.
# The listener binds 127.0.0.1:0 and the port is read from keygate's log, so no port is guessed.
# Every wait polls with a deadline.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "static-smoke: $*" >&2; }
fail() {
    say "FAIL: $*"
    if [ -s "${tmp:-/nonexistent}/serve.log" ]; then
        say "server log:"
        sed 's/^/    /' "$tmp/serve.log" >&2
    fi
    exit 1
}

for tool in curl file ldd; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done
strace_on=${KEYGATE_SMOKE_SYSCALLS:-}
if [ -n "$strace_on" ]; then
    for tool in strace systemd-analyze pgrep; do
        command -v "$tool" >/dev/null || fail "KEYGATE_SMOKE_SYSCALLS needs $tool"
    done
fi

tmp=$(mktemp -d)
server=""   # pid of the background job: keygate, or strace running it
target=""   # pid of keygate itself
cleanup() {
    # keygate first: a tracee outlives a killed strace.
    if [ -n "$target" ]; then kill -KILL "$target" 2>/dev/null || true; fi
    if [ -n "$server" ]; then
        kill -KILL "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

started=$SECONDS
if [ -n "${KEYGATE_STATIC_BIN:-}" ]; then
    bin=$(realpath "$KEYGATE_STATIC_BIN")
else
    scripts/build-static.sh --profile "${KEYGATE_STATIC_PROFILE:-ci-static}" --out "$tmp/keygate"
    bin=$tmp/keygate
fi
build_s=$((SECONDS - started))
[ -x "$bin" ] || fail "no binary at $bin"

# Static, whatever built it: no interpreter, no shared libraries.
ldd_out=$(ldd "$bin" 2>&1 | sed 's/^[[:space:]]*//' || true)
case "$ldd_out" in
    *"statically linked"*|*"not a dynamic executable"*) ;;
    *) fail "$bin is not static; ldd says: $ldd_out" ;;
esac
case "$(file -b "$bin")" in
    *"static-pie linked"*|*"statically linked"*) ;;
    *) fail "$bin is not static; file says: $(file -b "$bin")" ;;
esac
say "static: ldd says '$ldd_out'"

# Everything keygate sees lives under $root: bin/keygate, etc/, state/, run/. `kg` runs the
# binary with an empty environment (no PATH, HOME, locale...), chrooted into $root when it can;
# $in is how keygate spells $root (in its config and in CLI flags).
root=$tmp/root
mkdir -p "$root/bin" "$root/etc" "$root/state"
cp "$bin" "$root/bin/keygate"
chroot_bin=$(command -v chroot || true)
if [ "${KEYGATE_SMOKE_CHROOT:-1}" != 0 ] && [ "$(id -u)" -eq 0 ] && [ -n "$chroot_bin" ]; then
    in=""
    kg_cmd=(env -i "$chroot_bin" "$root" /bin/keygate)
    say "running keygate in an empty chroot (only the binary, its config and its state)"
else
    in=$root
    kg_cmd=(env -i "$root/bin/keygate")
    say "running keygate in place with an empty environment (no chroot: not root)"
fi
# env and chroot exec, so a background `kg_cmd` job's pid is keygate's own. A client command
# that hangs (a binary that starts serving instead of answering) fails after 30s.
kg() { timeout 30 "${kg_cmd[@]}" "$@"; }

version=$(kg --version) || fail "keygate --version failed"
case "$version" in keygate\ *) ;; *) fail "unexpected --version output: $version" ;; esac
say "$version"

sock=$root/run/admin.sock
cat >"$root/etc/keygate.toml" <<EOF
# static-smoke: plain HTTP on a port the kernel picks, state and socket in the test's root,
# no upstreams and no routes (so every keyed request is 404 route_not_found).
[server]
state_dir = "$in/state"
shutdown_grace = "5s"

[admin]
socket = "$in/run/admin.sock"

[[listeners]]
addr = "127.0.0.1:0"
EOF

kg config check "$in/etc/keygate.toml" >/dev/null 2>"$tmp/check.err" ||
    fail "config check rejected a valid file: $(cat "$tmp/check.err")"
# A misspelt setting must be refused, with its line and column.
sed 's/^shutdown_grace/shutdown_grce/' "$root/etc/keygate.toml" >"$root/etc/bad.toml"
status=0
kg config check "$in/etc/bad.toml" >/dev/null 2>"$tmp/check.err" || status=$?
[ "$status" -eq 1 ] || fail "config check of a misspelt file exited $status, not 1"
grep -q "bad.toml:[0-9]*:[0-9]*" "$tmp/check.err" ||
    fail "config check did not name file:line:col: $(cat "$tmp/check.err")"
say "config check: a valid file passes, a misspelt one fails with file:line:col"

if [ -n "$strace_on" ]; then
    strace -f -qq -o "$tmp/strace" "${kg_cmd[@]}" serve --config "$in/etc/keygate.toml" \
        2>"$tmp/serve.log" &
else
    "${kg_cmd[@]}" serve --config "$in/etc/keygate.toml" 2>"$tmp/serve.log" &
fi
server=$!
target=$server

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds; fails if the
# server dies first or the deadline passes.
wait_until() {
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        kill -0 "$server" 2>/dev/null || fail "the server exited while waiting for $what"
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out waiting for $what"
        sleep 0.1
    done
}

listening_port() {
    port=$(sed -n 's/.*data plane listening.*addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/serve.log" |
        head -n1)
    [ -n "$port" ]
}
healthy() { curl -sf -o /dev/null "http://127.0.0.1:$port/healthz"; }

wait_until 20 "the listener's address in the log" listening_port
wait_until 20 "GET /healthz on port $port" healthy
say "serving on 127.0.0.1:$port, /healthz answers"
if [ -n "$strace_on" ]; then
    target=$(pgrep -P "$server" -x keygate) || fail "cannot find keygate under strace"
fi

kg --socket "$in/run/admin.sock" status >"$tmp/status.out" 2>&1 ||
    fail "keygate status failed: $(cat "$tmp/status.out")"
grep -q "keygate" "$tmp/status.out" || fail "unexpected status output: $(cat "$tmp/status.out")"
say "keygate status: ok"

key=$(kg --socket "$in/run/admin.sock" keys create --name smoke 2>"$tmp/create.err" | tail -n1) ||
    fail "keys create failed: $(cat "$tmp/create.err")"
[[ "$key" =~ ^sk-kg-[A-Za-z0-9]{20,}$ ]] || fail "keys create printed no key on its last line: '$key'"
say "keys create: got ${key:0:18}…"

# request ARGS...: prints "STATUS BODY" of a POST to /v1/chat/completions.
request() {
    curl -s -o "$tmp/body" -w '%{http_code}' "$@" -H 'content-type: application/json' \
        -d '{"model":"gpt-4o-mini","messages":[]}' "http://127.0.0.1:$port/v1/chat/completions"
    echo " $(cat "$tmp/body")"
}
got=$(request)
case "$got" in "401 "*missing_api_key*) ;; *) fail "a request without a key got: $got" ;; esac
got=$(request -H "Authorization: Bearer $key")
case "$got" in
    "404 "*route_not_found*) ;;
    *) fail "a keyed request got: $got (wanted 404 route_not_found)" ;;
esac
say "requests: no key -> 401 missing_api_key, key -> 404 route_not_found"

kill -TERM "$target"
stopped() { ! kill -0 "$server" 2>/dev/null; }
deadline=$((SECONDS + 10))
until stopped; do
    [ "$SECONDS" -lt "$deadline" ] || fail "keygate still running 10s after SIGTERM"
    sleep 0.1
done
status=0
wait "$server" || status=$?
server=""
target=""
[ "$status" -eq 0 ] || fail "keygate exited $status after SIGTERM, not 0"
[ ! -e "$sock" ] || fail "the admin socket $sock is still there after shutdown"
say "SIGTERM: exit 0, admin socket removed"

if [ -n "$strace_on" ]; then
    # Every syscall name the server made, against @system-service minus @privileged and
    # @resources (the unit's SystemCallFilter=), each group expanded recursively.
    expand() {
        systemd-analyze syscall-filter "$1" | tail -n +2 | sed 's/^[[:space:]]*//' |
            grep -v -e '^#' -e '^$' | while read -r entry; do
                case "$entry" in @*) expand "$entry" ;; *) echo "$entry" ;; esac
            done
    }
    expand @system-service | sort -u >"$tmp/allow"
    { expand @privileged; expand @resources; } | sort -u >"$tmp/deny"
    comm -23 "$tmp/allow" "$tmp/deny" >"$tmp/allowed"
    # Only from keygate's own execve on: env and chroot run first in the same process.
    sed -n '\|execve("[^"]*/bin/keygate"|,$p' "$tmp/strace" >"$tmp/strace.keygate"
    [ -s "$tmp/strace.keygate" ] || fail "no execve of keygate in the strace output"
    mv "$tmp/strace.keygate" "$tmp/strace"
    sed -n 's/^[0-9]\+ \+\([a-z0-9_]\+\)(.*/\1/p' "$tmp/strace" | sort -u >"$tmp/used"
    say "system calls made by the server: $(wc -l <"$tmp/used")"
    denied=$(comm -23 "$tmp/used" "$tmp/allowed")
    [ -z "$denied" ] || fail "the unit's SystemCallFilter= would kill keygate on: $(echo $denied)"
    say "every one of them is allowed by the unit's SystemCallFilter="
    # MemoryDenyWriteExecute= refuses writable+executable mappings and mprotect adding PROT_EXEC.
    wx=$(grep -E 'mmap\([^)]*PROT_WRITE\|PROT_EXEC|mprotect\([^)]*PROT_EXEC' "$tmp/strace" || true)
    [ -z "$wx" ] || fail "MemoryDenyWriteExecute= would refuse: $wx"
    say "no writable+executable memory (MemoryDenyWriteExecute=)"
fi

say "OK (build ${build_s}s, total $((SECONDS - started))s)"
