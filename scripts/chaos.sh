#!/usr/bin/env bash
# The fault tests (`job-manager-tools chaos`, tools/src/chaos): seed-shaped jobs across replica
# processes with faults injected, each scenario ending in a chaos report (jobs submitted,
# finished, failed, stuck, lost; duplicated outputs). A scenario that loses, strands, fails or
# duplicates anything exits non-zero. Everything runs on 127.0.0.1 and stops by itself. Expects
# RabbitMQ and a MongoDB-wire server (scripts/services.sh); the `rabbitmq` scenario restarts the
# local RabbitMQ application. The network scenarios put a TCP proxy of the run's own between each
# replica and the servers, and slow, stall or cut one replica's connections through it.
#
#   scripts/chaos.sh            all scenarios
#   scripts/chaos.sh kill       one scenario: replicas | kill | kill-owner | rabbitmq | mongodb | duplicates |
#                               mongodb-slow | mongodb-stall | mongodb-cut |
#                               rabbitmq-slow | rabbitmq-stall | rabbitmq-cut
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# The tools start replicas of the service binary built beside them (target/debug/job-manager).
cargo build --locked --quiet -p job-manager -p job-manager-tools
BIN=target/debug/job-manager-tools
export RUST_LOG="${RUST_LOG:-warn}"

scenario() {
    local name=$1
    shift
    echo "== chaos: $name"
    "$BIN" chaos "$@"
}

wanted="${1:-all}"
run() { [[ "$wanted" == all || "$wanted" == "$1" ]]; }

# (a) three replicas, 200 jobs, results of one job spread over competing consumers
run replicas && scenario "3 replicas, 200 jobs" --replicas 3 --jobs 200
# (b) a replica killed with kill -9 three times mid-run and restarted
run kill && scenario "kill -9 of replicas" --replicas 3 --jobs 200 --faults kill,kill,kill
# (b') the replica active on the most result partitions killed with kill -9 and left dead: the
#      other takes its partitions (RabbitMQ's single active consumer) and finishes its jobs
run kill-owner && scenario "kill -9 of a partition owner" --replicas 2 --jobs 200 --faults kill-owner
# (c) RabbitMQ restarted mid-run
run rabbitmq && scenario "rabbitmq restart" --replicas 2 --jobs 100 --faults rabbitmq
# (d) the MongoDB-wire server restarted mid-run (the run starts its own on port 27018)
run mongodb && scenario "mongodb restart" --replicas 2 --jobs 100 --faults mongodb
# (e) every result delivered twice
run duplicates && scenario "every result twice" --replicas 2 --jobs 100 --faults duplicates
# (f) one replica's connections slowed (250 ms each way, 20 s), stalled (30 s: longer than the
#     MongoDB driver's 5 s timeouts and its monitor's 10 s + 5 s, than the 2 x 5 s heartbeat the
#     replicas ask for plus the 15 s a session may take to open) or cut twice (6 s), mid-run
for server in mongodb rabbitmq; do
    run "$server-slow" && scenario "$server slow" --replicas 2 --jobs 80 --faults "$server-slow" --timeout-s 120
    run "$server-stall" && scenario "$server stall" --replicas 2 --jobs 80 --faults "$server-stall" --network-fault-s 30 --timeout-s 120
    run "$server-cut" && scenario "$server cut" --replicas 2 --jobs 80 --faults "$server-cut,$server-cut" --timeout-s 120
done
echo "chaos: all scenarios clean"
