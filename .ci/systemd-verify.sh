#!/usr/bin/env bash
# CI: checks the systemd files in systemd/ the way systemd itself reads them.
#
# - `systemd-analyze verify` on the unit, unchanged, inside a throwaway root (--root) that holds
#   the host's system units, the keygate binary at /usr/local/bin/keygate and every other
#   program the unit runs, so that verify's "is ExecStart executable" check passes for real
#   and no root-owned path of this machine is touched. verify exits 0 even for unknown
#   settings and unparsable values (it only warns and ignores them), so any output fails.
# - Two deliberately broken copies must fail, to prove the check is not vacuous.
# - `systemd-sysusers --root` creates the keygate user and group from keygate.sysusers.
# - `systemd-analyze security --offline=yes` prints the exposure table and score (not asserted).
#
# The binary: $KEYGATE_BIN if set, else a debug build (`cargo build`, which the tests reuse).
# Installs systemd (for systemd-analyze) and procps (for /bin/kill) with apt if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

unit=systemd/keygate.service
sysusers=systemd/keygate.sysusers
name=$(basename "$unit")

say() { echo "systemd-verify: $*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

# apt_install PACKAGE: install from Debian, refreshing the package lists only if needed.
apt_install() {
    [ "$(id -u)" -eq 0 ] || fail "$1 is missing and installing it needs root"
    command -v apt-get >/dev/null || fail "$1 is missing and there is no apt-get"
    say "installing $1"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$1" >/dev/null ||
        { apt-get update -q >/dev/null && apt-get install -y -q "$1" >/dev/null; } ||
        fail "apt-get install $1 failed"
}

command -v systemd-analyze >/dev/null || apt_install systemd
command -v systemd-sysusers >/dev/null || apt_install systemd
[ -x /bin/kill ] || apt_install procps
say "$(systemd-analyze --version | head -n1)"

if [ -n "${KEYGATE_BIN:-}" ]; then
    bin=$KEYGATE_BIN
else
    say "building the keygate binary (debug)"
    cargo build --locked --quiet --bin keygate
    bin="${CARGO_TARGET_DIR:-target}/debug/keygate"
fi
[ -x "$bin" ] || fail "no keygate binary at $bin"

# Where this machine keeps its system units (/lib/systemd/system before the merged /usr).
host_units=/usr/lib/systemd/system
[ -d "$host_units" ] || host_units=/lib/systemd/system
[ -f "$host_units/multi-user.target" ] || fail "cannot find the system units of this machine"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# make_root DIR UNIT_FILE: a file system root for `--root` with the host's units, UNIT_FILE as
# /etc/systemd/system/$name and each program its Exec*= lines name.
make_root() {
    local root=$1 unit_file=$2 path
    mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root/usr/bin"
    # sysinit.target, network-online.target, multi-user.target, ... for the dependencies.
    cp -a "$host_units" "$root/usr/lib/systemd/"
    # Debian's merged /usr: /bin is usr/bin (relative, so it resolves inside the root).
    ln -s usr/bin "$root/bin"
    cp "$unit_file" "$root/etc/systemd/system/$name"
    # Each Exec*= program, without the "-@:+!" prefixes systemd allows before the path.
    sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' "$unit_file" | sort -u | while read -r path; do
        [ -e "$root$path" ] && continue
        mkdir -p "$(dirname "$root$path")"
        if [ "$path" = /usr/local/bin/keygate ]; then
            # A hard link when possible: the debug binary is large.
            ln "$bin" "$root$path" 2>/dev/null || cp "$bin" "$root$path"
        else
            [ -x "$path" ] || fail "$unit_file runs $path, which this machine lacks too"
            cp "$path" "$root$path"
        fi
    done
}

# verify ROOT: systemd-analyze verify's output; non-zero if it failed or said anything.
verify() {
    local out
    out=$(systemd-analyze verify --root="$1" "$name" 2>&1) || { echo "$out"; return 1; }
    [ -z "$out" ] || { echo "$out"; return 1; }
}

say "verify $unit"
make_root "$tmp/root" "$unit"
if ! out=$(verify "$tmp/root"); then
    echo "$out" >&2
    fail "systemd-analyze verify rejected $unit"
fi

say "checking that verify catches mistakes"
sed 's/^NoNewPrivileges=yes$/NoNewPrivilege=yes/' "$unit" >"$tmp/typo.service"
grep -q '^NoNewPrivilege=yes$' "$tmp/typo.service" || fail "could not make the misspelt copy"
make_root "$tmp/typo" "$tmp/typo.service"
verify "$tmp/typo" >/dev/null && fail "verify accepted a misspelt setting (NoNewPrivilege=)"
make_root "$tmp/nobin" "$unit"
rm "$tmp/nobin/usr/local/bin/keygate"
verify "$tmp/nobin" >/dev/null && fail "verify accepted a unit whose ExecStart binary is missing"

say "sysusers $sysusers"
# Installed where the docs say, then created the way `systemd-sysusers` does at boot.
mkdir -p "$tmp/users/etc" "$tmp/users/usr/lib/sysusers.d"
cp "$sysusers" "$tmp/users/usr/lib/sysusers.d/keygate.conf"
systemd-sysusers --root="$tmp/users" >&2
passwd_line='^keygate:x:[0-9]*:[0-9]*:[^:]*:/var/lib/keygate:/usr/sbin/nologin$'
grep -q "$passwd_line" "$tmp/users/etc/passwd" ||
    fail "systemd-sysusers did not create the keygate user: $(cat "$tmp/users/etc/passwd")"
grep -q '^keygate:x:[0-9]*:$' "$tmp/users/etc/group" ||
    fail "systemd-sysusers did not create the keygate group"

say "security $unit (offline; informational)"
systemd-analyze security --offline=yes --root="$tmp/root" --no-pager "$name" \
    >"$tmp/security" 2>&1 ||
    { cat "$tmp/security" >&2; fail "systemd-analyze security failed"; }
if [ -n "${KEYGATE_SYSTEMD_VERBOSE:-}" ]; then
    cat "$tmp/security"
else
    # The settings that still cost exposure, and the score.
    grep -E '^✗|Overall exposure' "$tmp/security" || cat "$tmp/security"
fi

say "OK"
