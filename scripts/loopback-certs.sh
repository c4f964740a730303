# shellcheck shell=bash
# A throwaway certificate authority and a certificate it signed for localhost and 127.0.0.1,
# for TLS on loopback: the benchmark's listeners (bench/run.sh) and the PGO training run
# (scripts/pgo-profile.sh). Sourced, not run. Needs openssl.
#
#   loopback_certs DIR     # writes DIR/ca.pem (to trust), DIR/cert.pem and DIR/key.pem
loopback_certs() {
    (
        cd "$1" || exit 1
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj /CN=keygate-loopback-ca -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj /CN=localhost -keyout key.pem -out leaf.csr 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >leaf.ext
        openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile leaf.ext -out cert.pem 2>/dev/null
    )
}
