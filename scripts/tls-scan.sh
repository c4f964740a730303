#!/usr/bin/env bash
# TLS scan of keygate's TLS listener (issue 8). Makes throwaway self-signed certificates (ECDSA
# P-256 and RSA 2048), starts `keygate serve` with one TLS listener per certificate on free
# loopback ports, scans each with sslscan and testssl (Debian's packages `sslscan` and
# `testssl.sh`, installed with apt-get when missing), and checks the results mechanically:
# only TLS 1.2 and 1.3; no NULL, anonymous, EXPORT, DES, RC4, 3DES, IDEA, MD5 or CBC suites;
# forward secrecy on every TLS 1.2 suite; key exchange groups of at least 128-bit strength;
# no TLS compression; no insecure renegotiation; not vulnerable to Heartbleed; ALPN h2 and
# http/1.1; and no other testssl finding of severity MEDIUM or worse beyond a short list of
# accepted ones (each with its reason below). Prints a summary table; exits 1 when a check
# fails, 2 when the scan cannot run. See docs/tls-scan.md for the recorded findings.
#
#   scripts/tls-scan.sh [--no-testssl] [--key ecdsa|rsa|both] [--out DIR]
#
# The keygate binary is $KEYGATE_BIN, else ${CARGO_TARGET_DIR:-target}/release/keygate; build it
# with `cargo build --release --bin keygate`. Raw reports go to DIR (default target/tls-scan).
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

TESTSSL=1
KEYS=(ecdsa rsa)
OUT=target/tls-scan
while (($#)); do
    case $1 in
    --no-testssl) TESTSSL=0 ;;
    --key)
        case ${2:-} in
        ecdsa | rsa) KEYS=("$2") ;;
        both) KEYS=(ecdsa rsa) ;;
        *) echo "--key takes ecdsa, rsa or both" >&2; exit 2 ;;
        esac
        shift
        ;;
    --out) OUT=${2:?--out takes a directory}; shift ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

KEYGATE_BIN=${KEYGATE_BIN:-${CARGO_TARGET_DIR:-target}/release/keygate}
if [[ ! -x $KEYGATE_BIN ]]; then
    echo "no keygate binary at $KEYGATE_BIN: run 'cargo build --release --bin keygate' or set KEYGATE_BIN" >&2
    exit 2
fi

log() { printf '== %s\n' "$*" >&2; }

# Installs Debian package $2 when command $1 is missing; fails (returns 1) if it cannot.
ensure() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null && return 0
    command -v apt-get >/dev/null || return 1
    log "installing $pkg"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1 || return 1
    fi
    command -v "$cmd" >/dev/null
}

ensure openssl openssl || { echo "openssl is needed" >&2; exit 2; }
ensure sslscan sslscan || { echo "sslscan is needed (Debian package sslscan)" >&2; exit 2; }
if ((TESTSSL)); then
    # Debian's testssl.sh package installs the command as `testssl`.
    if ! ensure testssl testssl.sh || ! ensure jq jq; then
        log "testssl (Debian package testssl.sh) or jq is not installable: its checks are skipped"
        TESTSSL=0
    fi
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/sslscan-* "$OUT"/testssl-* "$OUT"/summary.txt "$OUT"/keygate.*
WORK=$(mktemp -d "${TMPDIR:-/tmp}/keygate-tls-scan.XXXXXX")
KEYGATE_PID=''
cleanup() {
    if [[ -n $KEYGATE_PID ]] && kill -0 "$KEYGATE_PID" 2>/dev/null; then
        kill -TERM "$KEYGATE_PID" 2>/dev/null || true
        wait "$KEYGATE_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# True when something accepts TCP connections on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A loopback port below the ephemeral range (where a scan's thousands of TIME_WAIT sockets
# cannot be in the way), that no socket uses and not in $USED.
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((EPHEMERAL_LOW > 12000)) || EPHEMERAL_LOW=61000
USED=' '
free_port() {
    local port tries
    for ((tries = 0; tries < 200; tries++)); do
        port=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        [[ $USED == *" $port "* ]] && continue
        listening "$port" && continue
        if command -v ss >/dev/null && [[ -n $(ss -Htan "( sport = :$port )" 2>/dev/null) ]]; then
            continue
        fi
        USED+="$port "
        echo "$port"
        return 0
    done
    echo "no free loopback port found" >&2
    return 1
}

# ---------------------------------------------------------------------------------------------
# Certificates, config, server.

declare -A PORT
make_cert() {
    local kind=$1 newkey
    case $kind in
    ecdsa) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
    esac
    openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj /CN=localhost \
        -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
        -keyout "$WORK/$kind.key" -out "$WORK/$kind.crt" 2>/dev/null
}

UPSTREAM_PORT=$(free_port)
{
    cat <<EOF
[server]
state_dir = "$WORK/state"
shutdown_grace = "0s"

[admin]
socket = "$WORK/admin.sock"

# Nothing listens there: the scan never gets past the TLS layer and a 401.
[upstreams.none]
base_url = "http://127.0.0.1:$UPSTREAM_PORT"

[[routes]]
path = "/v1/"
upstream = "none"
EOF
    for kind in "${KEYS[@]}"; do
        make_cert "$kind"
        PORT[$kind]=$(free_port)
        cat <<EOF

[[listeners]]
addr = "127.0.0.1:${PORT[$kind]}"
tls_cert = "$WORK/$kind.crt"
tls_key = "$WORK/$kind.key"
EOF
    done
} >"$WORK/keygate.toml"
mkdir -p "$WORK/state"

log "starting $KEYGATE_BIN"
"$KEYGATE_BIN" serve --config "$WORK/keygate.toml" >"$WORK/keygate.log" 2>&1 &
KEYGATE_PID=$!
for kind in "${KEYS[@]}"; do
    for ((i = 0; i < 200; i++)); do
        listening "${PORT[$kind]}" && break
        if ! kill -0 "$KEYGATE_PID" 2>/dev/null; then
            echo "keygate exited:" >&2
            cat "$WORK/keygate.log" >&2
            exit 2
        fi
        sleep 0.1
    done
    listening "${PORT[$kind]}" || { echo "keygate is not listening on ${PORT[$kind]}" >&2; exit 2; }
done

# ---------------------------------------------------------------------------------------------
# Results: one cell per check and certificate, FAIL winning over PASS over SKIP.

CHECKS=(protocols weak-suites cbc-suites forward-secrecy kx-groups compression renegotiation
    heartbleed alpn testssl-other)
declare -A TITLE=(
    [protocols]='only TLS 1.2 and 1.3 (SSLv2/3, TLS 1.0/1.1 off)'
    [weak-suites]='no NULL/anon/EXPORT/DES/RC4/3DES/IDEA/MD5'
    [cbc-suites]='no CBC (non-AEAD) suites'
    [forward-secrecy]='forward secrecy on every TLS 1.2 suite'
    [kx-groups]='key exchange groups >= 128-bit'
    [compression]='no TLS compression'
    [renegotiation]='no insecure renegotiation'
    [heartbleed]='Heartbleed not vulnerable'
    [alpn]='ALPN h2 and http/1.1'
    [testssl-other]='no other testssl finding >= MEDIUM'
)
declare -A CELL
DETAILS=()

# record CHECK KIND TOOL PASS|FAIL|SKIP DETAIL
record() {
    local key="$1|$2" old=${CELL["$1|$2"]:-}
    DETAILS+=("$(printf '%-6s %-15s %-8s %-4s %s' "$2" "$1" "$3" "$4" "$5")")
    case $4 in
    FAIL) CELL[$key]=FAIL ;;
    PASS) [[ $old == FAIL ]] || CELL[$key]=PASS ;;
    SKIP) [[ -n $old ]] || CELL[$key]=SKIP ;;
    esac
}

# verdict KIND CHECK TOOL OK DETAIL: PASS when OK is 1, else FAIL.
verdict() {
    if (($4)); then record "$2" "$1" "$3" PASS "$5"; else record "$2" "$1" "$3" FAIL "$5"; fi
}

# ---------------------------------------------------------------------------------------------
# sslscan. Its XML has one element per line; attributes are read with sed.

# The values of attribute $2 in the lines of $1 matching $3.
attr() { { grep -E "$3" "$1" || true; } | sed -nE "s/.* $2=\"([^\"]*)\".*/\1/p"; }

scan_sslscan() {
    local kind=$1 port=${PORT[$1]} xml="$OUT/sslscan-$1.xml" ok
    log "sslscan $kind on 127.0.0.1:$port"
    sslscan --no-colour --show-sigs --sni-name=localhost --xml="$xml" "127.0.0.1:$port" \
        >"$OUT/sslscan-$kind.txt" 2>&1 || true
    sed -i 's/\x1b\[[0-9;]*m//g' "$OUT/sslscan-$kind.txt"
    if ! grep -q '<ssltest ' "$xml" 2>/dev/null; then
        for check in protocols weak-suites cbc-suites forward-secrecy kx-groups renegotiation heartbleed; do
            record "$check" "$kind" sslscan FAIL "no result (see $OUT/sslscan-$kind.txt)"
        done
        return
    fi

    local enabled
    enabled=$({ grep -E '<protocol .*enabled="1"' "$xml" || true; } |
        sed -nE 's/.*type="([a-z]+)" version="([0-9.]+)".*/\1\2/p' | sort | xargs)
    ok=1
    [[ $enabled == 'tls1.2 tls1.3' ]] || ok=0
    verdict "$kind" protocols sslscan $ok "enabled: ${enabled:-none}"

    # Suites by protocol: TLS 1.3 and everything older (only TLS 1.2 if the check above held).
    local older tls13 all
    older=$(attr "$xml" cipher '<cipher .*sslversion="(SSLv[23]|TLSv1\.[012])"' | xargs)
    tls13=$(attr "$xml" cipher '<cipher .*sslversion="TLSv1.3"' | xargs)
    all="$older $tls13"
    local weak strength
    weak=$(tr ' ' '\n' <<<"$all" | grep -E 'NULL|ADH|AECDH|anon|EXP|DES|RC4|RC2|IDEA|MD5|SEED' | xargs || true)
    strength=$(attr "$xml" strength '<cipher ' | grep -vxE 'strong|acceptable' | sort -u | xargs || true)
    ok=1
    [[ -z $weak && -z $strength && -n ${all// /} ]] || ok=0
    verdict "$kind" weak-suites sslscan $ok "TLS1.2 and older: ${older:-none}; TLS1.3: ${tls13:-none}${weak:+; weak: $weak}${strength:+; rated $strength}"

    local cbc
    cbc=$(tr ' ' '\n' <<<"$all" | grep -vE '^$|GCM|CHACHA20|CCM' | xargs || true)
    ok=1
    [[ -z $cbc ]] || ok=0
    verdict "$kind" cbc-suites sslscan $ok "${cbc:+non-AEAD: }${cbc:-all AEAD}"

    # TLS 1.3 suites name no key exchange; rustls resumes TLS 1.3 sessions only with psk_dhe_ke,
    # so every TLS 1.3 handshake has an (EC)DHE exchange.
    local nofs
    nofs=$(tr ' ' '\n' <<<"$older" | grep -vE '^$|^(ECDHE|DHE)-' | xargs || true)
    ok=1
    [[ -z $nofs && -n $older ]] || ok=0
    verdict "$kind" forward-secrecy sslscan $ok "${nofs:+without FS: }${nofs:-all (EC)DHE}"

    local groups small curves12
    groups=$({ grep -E '<group ' "$xml" || true; } | sed -nE 's/.*bits="([0-9]+)" name="([^"]*)".*/\2 (\1-bit)/p' | paste -sd, - | sed 's/,/, /g')
    small=$(attr "$xml" bits '<group ' | awk '$1 < 128' | xargs)
    curves12=$(grep -E '<cipher .*sslversion="TLSv1.2"' "$xml" | sed -nE 's/.*curve="([^"]*)" ecdhebits="([0-9]+)".*/\1 (\2 bits)/p' | sort -u | paste -sd, - || true)
    ok=1
    [[ -z $small && -n $groups ]] || ok=0
    verdict "$kind" kx-groups sslscan $ok "groups: ${groups:-none}; TLS1.2 suites negotiated: ${curves12:-?}"

    local supported secure
    supported=$(attr "$xml" supported '<renegotiation ')
    secure=$(attr "$xml" secure '<renegotiation ')
    ok=1
    [[ $supported == 0 || $secure == 1 ]] || ok=0
    verdict "$kind" renegotiation sslscan $ok "supported=$supported secure=$secure"

    local hb
    hb=$({ grep -E '<heartbleed ' "$xml" || true; } | sed -nE 's/.*sslversion="([^"]*)" vulnerable="([01])".*/\1=\2/p' | xargs)
    ok=1
    [[ -n $hb && $hb != *=1* ]] || ok=0
    verdict "$kind" heartbleed sslscan $ok "vulnerable: ${hb:-not tested}"

    # sslscan's Debian build has no zlib and cannot test compression; the probe below does.
    if grep -q '<compression ' "$xml"; then
        ok=1
        [[ $(attr "$xml" supported '<compression ') == 0 ]] || ok=0
        verdict "$kind" compression sslscan $ok "compression supported=$(attr "$xml" supported '<compression ')"
    fi
}

# ---------------------------------------------------------------------------------------------
# Own probes: ALPN with openssl s_client, compression with a hand-made TLS 1.2 ClientHello.

alpn_of() {
    echo | timeout 10 openssl s_client -connect "127.0.0.1:$1" -servername localhost -alpn "$2" 2>/dev/null |
        sed -nE 's/^ALPN protocol: (.*)$/\1/p; s/^(No ALPN negotiated)$/none/p' | head -1 || true
}

probe_alpn() {
    local kind=$1 both h1 ok
    both=$(alpn_of "${PORT[$kind]}" h2,http/1.1)
    h1=$(alpn_of "${PORT[$kind]}" http/1.1)
    ok=1
    [[ $both == h2 && $h1 == http/1.1 ]] || ok=0
    verdict "$kind" alpn openssl $ok "offer h2,http/1.1 -> ${both:-no handshake}; offer http/1.1 -> ${h1:-no handshake}"
}

hex_len() { printf "%0${2}x" $((${#1} / 2)); }

# A TLS 1.2 ClientHello offering the compression methods $1 (hex, e.g. 0100 = DEFLATE, null).
client_hello() {
    local methods=$1 suites ext body hs
    suites=c02bc02fcca9cca8c02cc030
    ext=000a00060004001d0017  # supported_groups: x25519, secp256r1
    ext+=000b00020100         # ec_point_formats: uncompressed
    ext+=000d000a00080403080404010503  # signature_algorithms: ECDSA P-256, RSA-PSS, RSA PKCS#1
    ext+=ff01000100           # renegotiation_info, empty
    body=0303$(printf '%064x' 0 | tr 0 a)00
    body+=$(hex_len "$suites" 4)$suites
    body+=$(hex_len "$methods" 2)$methods
    body+=$(hex_len "$ext" 4)$ext
    hs=01$(hex_len "$body" 6)$body
    printf '160301%s%s' "$(hex_len "$hs" 4)" "$hs"
}

# Sends ClientHello hex $2 to port $1; prints the first bytes of the answer as hex.
exchange() {
    local bytes='' i
    for ((i = 0; i < ${#2}; i += 2)); do bytes+="\\x${2:i:2}"; done
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1"
        printf '%b' "$bytes" >&3
        timeout 5 head -c 128 <&3 | od -An -v -tx1 | tr -d ' \n'
    ) 2>/dev/null || true
}

probe_compression() {
    local kind=$1 port=${PORT[$1]} reply sid method only ok
    # DEFLATE and null offered: the ServerHello must pick null (00).
    reply=$(exchange "$port" "$(client_hello 020100)")
    if [[ ${reply:0:2} == 16 && ${reply:10:2} == 02 ]]; then
        sid=$((16#${reply:86:2}))
        method=${reply:$((2 * (46 + sid))):2}
    else
        method="no ServerHello (${reply:0:14})"
    fi
    # DEFLATE alone: the server must refuse (alert 15 or close), not answer a ServerHello.
    only=$(exchange "$port" "$(client_hello 0101)")
    if [[ ${only:0:2} == 15 ]]; then only="alert ${only:10:2} ${only:12:2}"; elif [[ -z $only ]]; then only=closed; else only="answered ${only:0:12}"; fi
    ok=1
    [[ $method == 00 && $only != answered* ]] || ok=0
    verdict "$kind" compression probe $ok "offer DEFLATE+null -> method $method; offer DEFLATE only -> $only"
}

# ---------------------------------------------------------------------------------------------
# testssl: flat JSON, one object per finding {id, severity, finding}.

# Findings accepted at MEDIUM or worse, and why (docs/tls-scan.md has the discussion).
declare -A ACCEPTED=(
    [cert_chain_of_trust]='the throwaway certificate is self-signed'
    [cert_expirationStatus]='the throwaway certificate lives 2 days'
    [cert_notAfter]='the throwaway certificate lives 2 days'
    [cert_revocation]='the throwaway certificate has no CRL or OCSP URI'
    [cipher_order]='client chooses among AEAD+FS suites only, as Mozilla intermediate/modern advise'
    [security_headers]='HTTP headers of a 401 API answer, not TLS'
)

# The finding of testssl id $1 in $TS_JSON ("" when absent).
f() { jq -r --arg id "$1" '[.[] | select(.id == $id) | .finding] | first // ""' "$TS_JSON"; }
# The severity of testssl id $1 in $TS_JSON.
s() { jq -r --arg id "$1" '[.[] | select(.id == $id) | .severity] | first // ""' "$TS_JSON"; }

TS_JSON=''
scan_testssl() {
    local kind=$1 port=${PORT[$1]} json="$OUT/testssl-$1.json"
    log "testssl $kind on 127.0.0.1:$port (about two minutes)"
    rm -f "$json"
    testssl --quiet --color 0 --warnings batch --jsonfile "$json" "127.0.0.1:$port" \
        >"$OUT/testssl-$kind.txt" 2>&1 || true
    if ! jq -e 'length > 0' "$json" >/dev/null 2>&1; then
        for check in protocols weak-suites cbc-suites forward-secrecy kx-groups compression renegotiation heartbleed alpn testssl-other; do
            record "$check" "$kind" testssl FAIL "no result (see $OUT/testssl-$kind.txt)"
        done
        return
    fi
    TS_JSON=$json

    local ok off=() on=() id
    for id in SSLv2 SSLv3 TLS1 TLS1_1; do [[ $(f "$id") == 'not offered'* ]] || on+=("$id"); done
    for id in TLS1_2 TLS1_3; do [[ $(f "$id") == offered* ]] || off+=("$id"); done
    ok=1
    ((${#on[@]} == 0 && ${#off[@]} == 0)) || ok=0
    verdict "$kind" protocols testssl $ok "TLS1_2: $(f TLS1_2); TLS1_3: $(f TLS1_3)${on:+; offered: ${on[*]}}${off:+; missing: ${off[*]}}"

    local bad=()
    for id in cipherlist_NULL cipherlist_aNULL cipherlist_EXPORT cipherlist_LOW cipherlist_3DES_IDEA; do
        [[ $(f "$id") == 'not offered'* ]] || bad+=("$id=$(f "$id")")
    done
    ok=1
    ((${#bad[@]} == 0)) || ok=0
    verdict "$kind" weak-suites testssl $ok "${bad[*]:-NULL, aNULL, EXPORT, LOW, 3DES/IDEA not offered}"

    # Every offered suite, by IANA name (the last word of each cipher_x… finding).
    local iana
    iana=$(jq -r '.[] | select(.id | startswith("cipher_x")) | .finding' "$json" | awk '{print $NF}')
    local cbc
    cbc=$(grep -vE '^$|_GCM_|_CHACHA20_POLY1305_|_CCM' <<<"$iana" | xargs || true)
    ok=1
    [[ $(f cipherlist_AVERAGE) == 'not offered'* && -z $cbc ]] || ok=0
    verdict "$kind" cbc-suites testssl $ok "obsolete CBC: $(f cipherlist_AVERAGE)${cbc:+; non-AEAD: $cbc}"

    local nofs
    nofs=$(grep '_WITH_' <<<"$iana" | grep -vE '^TLS_(ECDHE|DHE)_' | xargs || true)
    ok=1
    [[ $(s PFS) == OK && -z $nofs && -n $iana ]] || ok=0
    verdict "$kind" forward-secrecy testssl $ok "PFS: $(f PFS)${nofs:+; without FS: $nofs}"


    # Finite-field groups below 3072 bits are under 128-bit strength (RFC 7919).
    local dh weakdh
    dh=$(f DH_groups)
    weakdh=$(tr ' ' '\n' <<<"$dh" | grep -vE '^$|^ffdhe(3072|4096|6144|8192)$' | xargs || true)
    ok=1
    [[ $(s PFS_ECDHE_curves) == OK && -z $weakdh ]] || ok=0
    verdict "$kind" kx-groups testssl $ok "ECDHE curves: $(f PFS_ECDHE_curves); finite-field DH: ${dh:-none}${weakdh:+; weak: $weakdh}"


    ok=1
    [[ $(s CRIME_TLS) == OK ]] || ok=0
    verdict "$kind" compression testssl $ok "CRIME_TLS: $(f CRIME_TLS)"


    ok=1
    [[ $(s secure_renego) == OK && $(s secure_client_renego) == OK ]] || ok=0
    verdict "$kind" renegotiation testssl $ok "secure_renego: $(f secure_renego); client-initiated: $(f secure_client_renego)"


    ok=1
    [[ $(s heartbleed) == OK ]] || ok=0
    verdict "$kind" heartbleed testssl $ok "$(f heartbleed)"


    ok=1
    [[ $(f ALPN_HTTP2) == h2 && $(f ALPN) == *http/1.1* ]] || ok=0
    verdict "$kind" alpn testssl $ok "ALPN_HTTP2: $(f ALPN_HTTP2); ALPN: $(f ALPN)"

    local worse=() accepted=() line sev
    while IFS=$'\t' read -r id sev line; do
        # A client-chosen order is only harmless while every suite is AEAD with forward secrecy.
        if [[ $id == cipher_order ]] && [[ ${CELL["weak-suites|$kind"]} == FAIL ||
            ${CELL["cbc-suites|$kind"]} == FAIL || ${CELL["forward-secrecy|$kind"]} == FAIL ]]; then
            worse+=("$id ($sev): $line")
        elif [[ -n ${ACCEPTED[$id]:-} ]]; then
            accepted+=("$id ($sev): ${ACCEPTED[$id]}")
        else
            worse+=("$id ($sev): $line")
        fi
    done < <(jq -r '.[] | select(.severity == "MEDIUM" or .severity == "HIGH" or .severity == "CRITICAL" or .id == "scanProblem") | [.id, .severity, .finding] | @tsv' "$json")
    ok=1
    ((${#worse[@]} == 0)) || ok=0
    verdict "$kind" testssl-other testssl $ok "${worse[*]:-none}"
    for line in "${accepted[@]}"; do record testssl-other "$kind" testssl PASS "accepted: $line"; done
}

# ---------------------------------------------------------------------------------------------

for kind in "${KEYS[@]}"; do
    scan_sslscan "$kind"
    probe_alpn "$kind"
    probe_compression "$kind"
    if ((TESTSSL)); then
        scan_testssl "$kind"
    else
        record testssl-other "$kind" testssl SKIP 'testssl not run'
    fi
done

if ! kill -0 "$KEYGATE_PID" 2>/dev/null; then
    echo "keygate died during the scan:" >&2
    tail -20 "$WORK/keygate.log" >&2
    exit 2
fi
cp "$WORK/keygate.toml" "$WORK/keygate.log" "$OUT/"

{
    echo "keygate $("$KEYGATE_BIN" --version | awk '{print $NF}'), $(openssl version)"
    echo "sslscan $(dpkg-query -W -f='${Version}' sslscan 2>/dev/null || sslscan --version | sed -n 1p)"
    if ((TESTSSL)); then echo "testssl.sh $(dpkg-query -W -f='${Version}' testssl.sh 2>/dev/null || echo '?')"; fi
    echo
    echo "Details (certificate, check, tool, result, what was seen):"
    printf '  %s\n' "${DETAILS[@]}"
    echo
    printf '%-50s' 'check'
    for kind in "${KEYS[@]}"; do printf ' %-6s' "$kind"; done
    echo
    failed=0
    for check in "${CHECKS[@]}"; do
        printf '%-50s' "${TITLE[$check]}"
        for kind in "${KEYS[@]}"; do
            cell=${CELL["$check|$kind"]:-SKIP}
            [[ $cell == FAIL ]] && failed=1
            printf ' %-6s' "$cell"
        done
        echo
    done
    echo
    echo "Raw reports: $OUT"
    if ((failed)); then echo 'RESULT: FAIL'; else echo 'RESULT: PASS'; fi
} | tee "$OUT/summary.txt"
grep -q '^RESULT: PASS' "$OUT/summary.txt"
