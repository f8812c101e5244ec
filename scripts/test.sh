#!/usr/bin/env bash
# The test command: starts (or installs) RabbitMQ and a MongoDB-wire server, runs the fault
# scenarios (scripts/chaos.sh), fuzzes the API from its OpenAPI document (scripts/fuzz.sh), then
# tests the Python worker SDK (scripts/sdk-test.sh), checks that the benchmark runs
# (scripts/bench-smoke.sh), then runs every unit and integration test of the workspace: the
# service, the tools (tools/) and the Rust worker crate (sdk/rust/, against the real RabbitMQ).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/services.sh
# The dashboard test drives Debian's headless Chromium.
if ! command -v chromium >/dev/null 2>&1; then
    echo "test: installing chromium with apt"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# Queues left by an interrupted earlier run (a test removes its own, passing or failing, unless
# the run is killed).
if command -v rabbitmqctl >/dev/null 2>&1; then
    rabbitmqctl -q list_queues name 2>/dev/null | grep -E '^jm-(sdk-)?test-' | while read -r queue; do
        # </dev/null: rabbitmqctl reads stdin and would swallow the rest of the list.
        rabbitmqctl -q delete_queue "$queue" </dev/null >/dev/null 2>&1 || true
    done || true
fi
# The fault tests and the API fuzzing first, so the last lines are the test runner's.
scripts/chaos.sh
scripts/fuzz.sh 60
scripts/sdk-test.sh
scripts/bench-smoke.sh
# OpenTelemetry export is behind a feature: test it on its own.
cargo test --locked --features otel --test api otel
# The worker crate's documentation example compiles (--all-targets leaves doc tests out).
cargo test --locked -p job-manager-worker --doc
cargo test --locked --workspace --all-targets "$@"
