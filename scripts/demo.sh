#!/usr/bin/env bash
# The run command: starts the services, then runs the demo job of the seed-shaped pipeline and
# prints its history record and output files. Uses its own database and queue prefix.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/services.sh
RUST_LOG="${RUST_LOG:-warn}" cargo run --locked --quiet -- demo \
    --database "${JOB_MANAGER_DATABASE:-job_manager_demo}" \
    --prefix "${JOB_MANAGER_PREFIX:-job-manager-demo}" \
    --listen "${JOB_MANAGER_LISTEN:-127.0.0.1:0}" \
    "$@"
