#!/usr/bin/env bash
# Builds keygate as one static executable (static-pie, glibc linked in) and copies it to
# dist/keygate, then shows its size and proves it is static with `file` and `ldd`.
#
#   scripts/build-static.sh                      # release profile: fat LTO, 1 codegen unit, PGO
#   scripts/build-static.sh --profile ci-static  # CI's faster profile (no optimizer, no PGO)
#   scripts/build-static.sh --out /tmp/keygate   # copy somewhere else than dist/keygate
#   scripts/build-static.sh --no-pgo             # without profile-guided optimization
#   scripts/build-static.sh --pgo                # PGO, and fail if it cannot be done
#
# PGO: the release build is optimized with a profile of keygate under a training load
# (scripts/pgo-profile.sh: an instrumented build, ~20 s of loopback traffic, llvm-profdata),
# and linked with its hot functions together. It runs about a fifth fewer instructions per
# proxied request (bench/cpu.sh) and serves about 10% more requests a second. Without the
# tools PGO needs (llvm-profdata of rustc's LLVM, curl, python3) the release build goes on
# without it, and says so; a training run that fails stops the build.
#
# `--target` is required: with it, RUSTFLAGS (+crt-static) apply only to the target binary and
# not to proc-macros and build scripts, which cannot be linked statically (see STACK.md).
# Honours CARGO_TARGET_DIR; the static artifacts land under $CARGO_TARGET_DIR/<target>/<profile>.
#
# getrandom_backend="linux_getrandom": getrandom 0.4 finds glibc's getrandom() with dlsym, which
# a static binary cannot do, and then silently reads /dev/urandom instead; without /dev (a bare
# chroot) creating a key fails. This cfg makes it call getrandom() directly (Linux >= 3.17).
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
profile=release
out=dist/keygate
pgo=auto

while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
        --out) out="${2:?--out needs a path}"; shift 2 ;;
        --pgo) pgo=on; shift ;;
        --no-pgo) pgo=off; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "build-static: unknown argument: $1" >&2; exit 2 ;;
    esac
done

for tool in cargo file ldd; do
    command -v "$tool" >/dev/null || { echo "build-static: $tool is not installed" >&2; exit 1; }
done

flags="${RUSTFLAGS:-} -C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\""
start=$SECONDS
[ "$pgo" = auto ] && { [ "$profile" = release ] && pgo=on-if-possible || pgo=off; }
with=''
if [ "$pgo" != off ]; then
    # Named after its contents: a new profile changes RUSTFLAGS, so cargo rebuilds with it.
    pgo_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")/pgo"
    mkdir -p "$pgo_dir"
    status=0
    RUSTFLAGS="$flags" scripts/pgo-profile.sh "$pgo_dir/new.profdata" || status=$?
    if [ "$status" = 0 ]; then
        sum=$(sha256sum "$pgo_dir/new.profdata" | cut -c1-16)
        mv -f "$pgo_dir/new.profdata" "$pgo_dir/keygate-$sum.profdata"
        find "$pgo_dir" -name 'keygate-*.profdata' ! -name "keygate-$sum.profdata" -delete
        # The profile sorts functions into hot and unlikely ones; keeping their section names
        # lets the linker put the hot ones together (fewer i-cache and TLB misses).
        flags="$flags -Cprofile-use=$pgo_dir/keygate-$sum.profdata"
        flags="$flags -C link-arg=-Wl,-z,keep-text-section-prefix"
        with=' with PGO'
    elif [ "$status" != 3 ]; then
        # The tools are there and the training broke: that is a bug to see, not to build past.
        echo "build-static: FAIL: the PGO training run failed (see above)" >&2
        exit 1
    elif [ "$pgo" = on ]; then
        echo "build-static: FAIL: --pgo, and the tools PGO needs are missing (see above)" >&2
        exit 1
    else
        echo "build-static: WARNING: no PGO (see above); building without it, which costs about a fifth more instructions per request" >&2
    fi
fi
echo "build-static: cargo build --profile $profile --target $target (+crt-static$with)" >&2
RUSTFLAGS="$flags" cargo build --locked --profile "$profile" --target "$target" --bin keygate
elapsed=$((SECONDS - start))

built="${CARGO_TARGET_DIR:-target}/$target/$profile/keygate"
[ -x "$built" ] || { echo "build-static: $built was not produced" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
cp -f "$built" "$out"

size=$(stat -c %s "$out")
file_out=$(file -b "$out")
# ldd exits 1 for a file that is not dynamic; its words are what matter here.
ldd_out=$(ldd "$out" 2>&1 | sed 's/^[[:space:]]*//' || true)

echo "build-static: built in ${elapsed}s${with}"
echo "build-static: $out: $size bytes ($(numfmt --to=iec-i --suffix=B "$size"))"
echo "file: $file_out"
echo "ldd:  $ldd_out"

case "$file_out" in
    *"static-pie linked"*|*"statically linked"*) ;;
    *) echo "build-static: FAIL: file does not call $out static" >&2; exit 1 ;;
esac
case "$ldd_out" in
    *"statically linked"*|*"not a dynamic executable"*) ;;
    *) echo "build-static: FAIL: ldd lists shared libraries for $out" >&2; exit 1 ;;
esac
echo "build-static: OK, $out is static"
