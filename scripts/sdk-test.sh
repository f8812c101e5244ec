#!/usr/bin/env bash
# Tests the Python worker SDK (sdk/python) against the real RabbitMQ and a running job-manager.
# Installs pika and pytest from PyPI into target/py-venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=target/py-venv
if [[ ! -x "$VENV/bin/pytest" ]]; then
    echo "sdk: installing pika and pytest into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "pika==1.3.2" "pytest==8.3.5"
fi
scripts/with-service.sh env PYTHONPATH=sdk/python "$VENV/bin/pytest" -q -p no:cacheprovider sdk/python/tests
