#!/usr/bin/env bash
# Fuzzes the REST API from its own OpenAPI document with schemathesis (PyPI, pinned, installed
# into target/fuzz-venv): no generated input, valid or not, may produce a 5xx. Starts its own
# job-manager on a free 127.0.0.1 port, with its own database and queue prefix, and stops it.
#   scripts/fuzz.sh [SECONDS]   time budget of the run (default 60)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
BUDGET="${1:-60}"
VENV=target/fuzz-venv
if [[ ! -x "$VENV/bin/st" ]]; then
    echo "fuzz: installing schemathesis into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet schemathesis==4.32.5
fi
cargo build --locked --quiet --bin job-manager
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUN="fuzz$(date +%s)$$"
JOB_MANAGER_LISTEN="127.0.0.1:$PORT" JOB_MANAGER_DATABASE="jm_$RUN" JOB_MANAGER_PREFIX="jm-$RUN" \
    RUST_LOG=warn target/debug/job-manager serve >target/fuzz-service.log 2>&1 &
SERVICE=$!
stop() {
    kill -TERM "$SERVICE" 2>/dev/null || true
    wait "$SERVICE" 2>/dev/null || true
    if command -v rabbitmqctl >/dev/null 2>&1; then
        rabbitmqctl -q list_queues name 2>/dev/null | grep "^jm-$RUN\." | while read -r queue; do
            rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
        done || true
    fi
}
trap stop EXIT
"$VENV/bin/st" run "http://127.0.0.1:$PORT/job-manager/openapi.json" \
    --checks not_a_server_error \
    --max-time "$BUDGET" \
    --wait-for-schema 60 \
    --seed 20261129 \
    --no-color
echo "fuzz: no 5xx in ${BUDGET}s of generated requests"
