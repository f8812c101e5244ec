#!/usr/bin/env bash
# Runs `job-manager-tools bench all --quick` and checks the shape of its table, not its figures:
# speed is measured by the real benchmark (README, Performance), never asserted in CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# The wide-stage and memory runs start replicas of the service binary built beside the tools.
cargo build --locked --quiet -p job-manager -p job-manager-tools
mkdir -p target
RUST_LOG="${RUST_LOG:-warn}" target/debug/job-manager-tools bench all --quick | tee target/bench-smoke.txt
for row in "(a) load + compare-and-set, concurrency 32" "(a) persistent publish, confirms pipelined" \
    "(a) consume + ack" "(a) combined per-task loop, concurrency 32" "(b) tasks/s, 1 replica" \
    "(b) result published → next stage's dispatch received (at the worker), p50 / p99" \
    "(b) p50 / p99 at half load" "(b) where a hop's time goes, 1 replica" \
    "(b) one job alone, end to end" "(b) tasks/s with result prefetch 64" \
    "(c) tasks/s, 3 replica(s)" "(d) one stage 50 wide" "(e) replica RSS with 50 active jobs" \
    "(a) combined per-task loop, concurrency 1" "(c) 1 replica(s): races" "(c) 3 replica(s): races" \
    "ratio: (b) tasks/s ÷ (a) combined loop" "ratio: 2 replicas ÷ 1 replica" \
    "ratio: one job alone (median) ÷ (6 × the per-task loop at concurrency 1)" \
    "(b) one job alone with Python SDK workers (one process, concurrency 1)" \
    "(b) one job alone with Python SDK workers (one process, concurrency 16)" \
    "ratio: one job alone with Python SDK workers, concurrency 1 (median)" \
    "ratio: one job alone with Python SDK workers, concurrency 16 (median)"; do
    if ! grep -qF "| $row" target/bench-smoke.txt; then
        echo "bench-smoke: the row '$row' is missing" >&2
        exit 1
    fi
done
# The Python rows are measured wherever the venv exists (scripts/test.sh runs scripts/sdk-test.sh,
# which creates it, first); without it they say "skipped: …".
if [[ -x target/py-venv/bin/python ]] && grep -E '^\| .*Python SDK' target/bench-smoke.txt | grep -qF '| skipped:'; then
    echo "bench-smoke: the Python rows were skipped although target/py-venv exists" >&2
    exit 1
fi
# The step budget must have read the service's histogram: every step of a hop is there.
# (`load` may be absent: a job's start begins from the job as inserted, and later hops from
# the replica's own copy. A short run may write no outbox mark at all, every task answering
# before its mark was due: then the marks skipped stand for the step.)
for step in apply write publish 'mark|[0-9]+ marks skipped'; do
    if ! grep -F "| (b) where a hop's time goes" target/bench-smoke.txt | grep -qE "(^|· |\| )($step)( [0-9]|$| ·)"; then
        echo "bench-smoke: the step '$step' is missing from the latency budget" >&2
        exit 1
    fi
done
if grep -E '^\| ' target/bench-smoke.txt | grep -qiE '\| (NaN|inf)'; then
    echo "bench-smoke: a figure is not a number" >&2
    exit 1
fi
echo "bench-smoke: the table has every row"
