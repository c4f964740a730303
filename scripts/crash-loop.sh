#!/usr/bin/env bash
# The full crash loop (issue 8): CYCLES times (default 200), keygate is killed with SIGKILL in
# the middle of admin writes and proxied load, and each restart checks that every acknowledged
# admin change survived, no acknowledged revocation is accepted, and usage lost is at most what
# was served in the last flush interval. CI runs the same test with 5 cycles.
#
#   scripts/crash-loop.sh [CYCLES]
set -euo pipefail
cd "$(dirname "$0")/.."
cycles="${1:-200}"
KEYGATE_CRASH_CYCLES="$cycles" cargo test --release --test crash -- --nocapture
