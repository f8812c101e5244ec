#!/usr/bin/env bash
# Makes RabbitMQ and a MongoDB-wire server answer on 127.0.0.1, reusing any that already run.
#
# RabbitMQ: started if installed, installed with apt if not.
# MongoDB:  `mongod` when it is on PATH; otherwise the pinned `secantusd-rs` (a MongoDB-wire
#           server, GPL-2.0, run as a separate process and never linked), installed with cargo
#           when missing.
# Running it twice is harmless. Data and logs go under $JOB_MANAGER_SERVICES_DIR
# (default: target/services in the repository).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES_DIR="${JOB_MANAGER_SERVICES_DIR:-$ROOT/target/services}"
AMQP_PORT="${JOB_MANAGER_AMQP_PORT:-5672}"
MONGO_PORT="${JOB_MANAGER_MONGO_PORT:-27017}"
SECANTUS_VERSION="0.5.3-beta.196"
export PATH="$HOME/.cargo/bin:$PATH"

log() { echo "services: $*" >&2; }

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name port seconds
    local name=$1 port=$2 limit=$3 waited=0
    until answers "$port"; do
        if (( waited >= limit )); then
            log "$name did not answer on 127.0.0.1:$port within ${limit}s"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

apt_install() {
    if [[ ! -f /var/lib/apt/lists/.job-manager-updated ]]; then
        apt-get update -qq
        touch /var/lib/apt/lists/.job-manager-updated || true
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

start_rabbitmq() {
    if answers "$AMQP_PORT"; then
        log "rabbitmq already answers on 127.0.0.1:$AMQP_PORT"
        return
    fi
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        log "installing rabbitmq-server with apt"
        apt_install rabbitmq-server
    fi
    if ! answers "$AMQP_PORT"; then
        log "starting rabbitmq"
        rabbitmq-server -detached >/dev/null 2>&1 || true
    fi
    wait_for rabbitmq "$AMQP_PORT" 120
    # The port opens before the broker accepts work; wait for the node to report running.
    if command -v rabbitmqctl >/dev/null 2>&1; then
        timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
    fi
}

install_secantus() {
    if command -v secantusd-rs >/dev/null 2>&1; then
        return
    fi
    log "installing secantusd-rs $SECANTUS_VERSION with cargo (takes a few minutes, once per machine)"
    if ! command -v cmake >/dev/null 2>&1; then
        apt_install cmake
    fi
    cargo install secantus-mdb --version "$SECANTUS_VERSION" --locked --ignore-rust-version --quiet
}

start_mongodb() {
    if answers "$MONGO_PORT"; then
        log "a mongodb-wire server already answers on 127.0.0.1:$MONGO_PORT"
        return
    fi
    mkdir -p "$SERVICES_DIR"
    if command -v mongod >/dev/null 2>&1; then
        log "starting mongod"
        mkdir -p "$SERVICES_DIR/mongod"
        mongod --dbpath "$SERVICES_DIR/mongod" --bind_ip 127.0.0.1 --port "$MONGO_PORT" \
            --fork --logpath "$SERVICES_DIR/mongod.log" >/dev/null
    else
        install_secantus
        log "starting secantusd-rs"
        mkdir -p "$SERVICES_DIR/secantus"
        nohup setsid secantusd-rs --port "$MONGO_PORT" --storage-path "$SERVICES_DIR/secantus" \
            --log-file-max 16MB --cache-size 256M >"$SERVICES_DIR/secantus.log" 2>&1 </dev/null &
    fi
    wait_for mongodb "$MONGO_PORT" 60
}

start_rabbitmq
start_mongodb
log "rabbitmq: amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f"
log "mongodb:  mongodb://127.0.0.1:$MONGO_PORT"
