#!/usr/bin/env bash
# Fuzzes the REST API from its own OpenAPI document with schemathesis (PyPI, pinned, installed
# into target/fuzz-venv): no generated input, valid or not, may produce a 5xx. Runs against a
# job-manager of its own (scripts/with-service.sh). The hostile inputs random generation rarely
# reaches (integers beyond 64 bits, deep nesting, huge keys, invalid UTF-8 and NUL bytes) are
# swept deterministically by tests/api/hostile.rs.
#   scripts/fuzz.sh [SECONDS]   time budget of the run (default 60)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUDGET="${1:-60}"
VENV=target/fuzz-venv
if [[ ! -x "$VENV/bin/st" ]]; then
    echo "fuzz: installing schemathesis into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet schemathesis==4.32.5
fi
scripts/with-service.sh sh -c "'$VENV/bin/st' run \"\$JOB_MANAGER_API_URL/openapi.json\" \
    --checks not_a_server_error --max-time '$BUDGET' --wait-for-schema 60 --seed 20261129 --no-color"
echo "fuzz: no 5xx in ${BUDGET}s of generated requests"
