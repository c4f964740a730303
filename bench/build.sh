# shellcheck shell=bash
# The keygate the benchmarks measure, shared by bench/run.sh, bench/cpu.sh and bench/attack/
# (sourced, not run): the binary keygate ships as, built by scripts/build-static.sh (static,
# release profile, profile-guided unless PGO=0 or the tools PGO needs are missing).
#
#   bench_keygate TARGET_DIR PGO LOG
#
# Sets KEYGATE (TARGET_DIR/bench-keygate) and KEYGATE_BUILD ("static, PGO" or "static, no
# PGO"). A PGO build takes minutes (an instrumented build, a training run, a full optimized
# build), so the binary is reused while what it is made from is unchanged (bench_keygate_key).
# A build that was to have PGO and came out without it is not reused.
bench_keygate() {
    local target=$1 pgo=$2 log=$3 out=$1/bench-keygate key
    bench_keygate_reuse "$target" "$pgo" && return
    KEYGATE=$out
    key=$(bench_keygate_key "$pgo") || key=''
    rm -f "$out.stamp"
    local flag=()
    ((pgo)) || flag=(--no-pgo)
    (cd "$ROOT" && CARGO_TARGET_DIR=$target scripts/build-static.sh --out "$out" "${flag[@]}") \
        >"$log" 2>&1 || return 1
    if grep -q 'with PGO$' "$log"; then
        KEYGATE_BUILD='static, PGO'
    else
        KEYGATE_BUILD='static, no PGO'
    fi
    if [[ -n $key ]] && { ((!pgo)) || [[ $KEYGATE_BUILD == 'static, PGO' ]]; }; then
        printf '%s\n%s\n' "$key" "$KEYGATE_BUILD" >"$out.stamp"
    fi
}

# bench_keygate_reuse TARGET_DIR PGO: sets KEYGATE and KEYGATE_BUILD and succeeds when the
# last bench build is still what the tree makes; fails, changing nothing, otherwise.
bench_keygate_reuse() {
    local out=$1/bench-keygate key
    key=$(bench_keygate_key "$2") || return 1
    [[ -x $out && -f $out.stamp && $(sed -n 1p "$out.stamp") == "$key" ]] || return 1
    KEYGATE=$out
    KEYGATE_BUILD=$(sed -n 2p "$out.stamp")
}

# What the bench binary is made from, as one hash: the sources, the manifest, the build
# scripts and the training tools as they are in the working tree (docs and tests do not count),
# the toolchain, the flags cargo would add, and PGO. Fails outside a git checkout: there is then
# nothing to tell a stale binary by, and it is always rebuilt.
bench_keygate_key() {
    local paths=(src Cargo.toml Cargo.lock examples scripts/build-static.sh scripts/pgo-profile.sh
        scripts/loopback-certs.sh)
    (
        cd "$ROOT" || exit 1
        git rev-parse --verify -q HEAD >/dev/null 2>&1 || exit 1
        {
            git ls-tree -r HEAD -- "${paths[@]}"
            git diff HEAD -- "${paths[@]}"
            git ls-files --others --exclude-standard -- "${paths[@]}"
            git ls-files -z --others --exclude-standard -- "${paths[@]}" | xargs -0 -r cat
            rustc -vV
            env | grep -E '^(RUSTFLAGS|CARGO_ENCODED_RUSTFLAGS|CARGO_PROFILE_[A-Z_]*)=' | sort
            echo "pgo=$1"
        } | sha256sum | cut -c1-32
    )
}
