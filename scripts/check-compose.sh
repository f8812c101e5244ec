#!/usr/bin/env bash
# Validates compose/compose.yaml with docker-compose (installed from Debian when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v docker-compose >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
fi
docker-compose -f compose/compose.yaml config -q
docker-compose -f compose/compose.yaml -f compose/compose.replica-set.yaml config -q
echo "compose/compose.yaml and its replica-set variant are valid"
