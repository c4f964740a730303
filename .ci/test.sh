#!/usr/bin/env bash
# The whole test suite: the README's test command, and what .ci/run calls.
# It installs what the tests need (a Python venv with the official SDKs), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f tests/sdk/requirements.txt ]; then
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
    export KEYGATE_SDK_PYTHON="$PWD/.venv/bin/python"
fi

cargo test --all-targets "$@"
