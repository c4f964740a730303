# shellcheck shell=bash
# The keygate the benchmarks measure, shared by bench/run.sh, bench/cpu.sh and bench/attack/
# (sourced, not run): the binary keygate ships as, built by scripts/build-static.sh (static,
# release profile, profile-guided unless PGO=0 or no llvm-profdata is found).
#
#   bench_keygate TARGET_DIR PGO LOG
#
# Sets KEYGATE (TARGET_DIR/bench-keygate) and KEYGATE_BUILD ("static, PGO" or "static, no
# PGO"). A PGO build takes minutes (an instrumented build, a training run, a full optimized
# build), so the binary is reused while the source tree, the toolchain and PGO are unchanged.
bench_keygate() {
    local target=$1 pgo=$2 log=$3 out=$1/bench-keygate tree
    # What the binary is made from: the sources, the manifest, the build scripts, the training
    # tools (docs and tests do not count).
    local paths=(src Cargo.toml Cargo.lock examples scripts/build-static.sh scripts/pgo-profile.sh
        scripts/loopback-certs.sh)
    tree=$(
        cd "$ROOT" || exit 1
        git rev-parse "HEAD:src" "HEAD:examples" 2>/dev/null
        git ls-files -s -- "${paths[@]}" | sha256sum
        { git diff HEAD -- "${paths[@]}"
          git ls-files -z --others --exclude-standard -- "${paths[@]}" | xargs -0 -r cat; } |
            sha256sum
        rustc -vV
        echo "pgo=$pgo"
    )
    tree=$(sha256sum <<<"$tree" | cut -c1-32)
    KEYGATE=$out
    if [[ -x $out && -f $out.stamp && $(sed -n 1p "$out.stamp") == "$tree" ]]; then
        KEYGATE_BUILD=$(sed -n 2p "$out.stamp")
        return
    fi
    local flag=()
    ((pgo)) || flag=(--no-pgo)
    (cd "$ROOT" && CARGO_TARGET_DIR=$target scripts/build-static.sh --out "$out" "${flag[@]}") \
        >"$log" 2>&1 || return 1
    if grep -q 'with PGO$' "$log"; then
        KEYGATE_BUILD='static, PGO'
    else
        KEYGATE_BUILD='static, no PGO'
    fi
    printf '%s\n%s\n' "$tree" "$KEYGATE_BUILD" >"$out.stamp"
}
