#!/usr/bin/env bash
# Runs a command against a job-manager of its own: starts `job-manager serve` on a free
# 127.0.0.1 port with its own database and queue prefix, exports JOB_MANAGER_API_URL,
# JOB_MANAGER_PREFIX and JOB_MANAGER_AMQP_URL for the command, then stops the service and
# removes its queues, exchanges and database, whether the command succeeded or not.
#   scripts/with-service.sh COMMAND [ARGS...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --locked --quiet --bin job-manager
cargo build --locked --quiet -p job-manager-tools --bin job-manager-tools
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUN="run$(date +%s)$$"
export JOB_MANAGER_PREFIX="jm-$RUN"
export JOB_MANAGER_AMQP_URL="${JOB_MANAGER_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export JOB_MANAGER_MONGODB_URI="${JOB_MANAGER_MONGODB_URI:-mongodb://127.0.0.1:27017}"
export JOB_MANAGER_API_URL="http://127.0.0.1:$PORT/job-manager"
mkdir -p target
JOB_MANAGER_LISTEN="127.0.0.1:$PORT" JOB_MANAGER_DATABASE="jm_$RUN" JOB_MANAGER_SWEEP_INTERVAL_S=1 \
    RUST_LOG="${RUST_LOG:-warn}" target/debug/job-manager serve >"target/service-$RUN.log" 2>&1 &
SERVICE=$!
stop() {
    kill -TERM "$SERVICE" 2>/dev/null || true
    wait "$SERVICE" 2>/dev/null || true
    target/debug/job-manager-tools cleanup --prefix "jm-$RUN" --database "jm_$RUN" \
        || echo "with-service: could not drop database jm_$RUN" >&2
    if command -v rabbitmqctl >/dev/null 2>&1; then
        rabbitmqctl -q list_queues name 2>/dev/null | grep "^jm-$RUN\." | while read -r queue; do
            # </dev/null: rabbitmqctl reads stdin and would swallow the rest of the list.
            rabbitmqctl -q delete_queue "$queue" </dev/null >/dev/null 2>&1 || true
        done || true
        # rabbitmqctl has no delete_exchange; the broker's own function does it (ok when gone).
        rabbitmqctl -q list_exchanges name 2>/dev/null | grep "^jm-$RUN\." | while read -r exchange; do
            rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$exchange\">>), false, <<\"with-service\">>)." \
                </dev/null >/dev/null 2>&1 || true
        done || true
    fi
}
trap stop EXIT
for _ in $(seq 1 300); do
    if python3 - "$JOB_MANAGER_API_URL/health/ready" <<'PY' 2>/dev/null; then break; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
PY
    sleep 0.2
done
"$@"
