#!/usr/bin/env bash
# Reference RabbitMQ for validating the client scenarios (needs root, Debian).
#
#   tests/clients/rabbitmq.sh start    # install if needed, start on port 5682
#   tests/clients/rabbitmq.sh stop
#   tests/clients/rabbitmq.sh status
#
# RabbitMQ listens on ${RABBITMQ_SCENARIO_PORT:-5682} (never 5672, which is
# Switchyard's) with distribution port +20000 and node name rabbit@localhost.
# Then: AMQP_URL='amqp://guest:guest@127.0.0.1:5682/%2F' tests/clients/run.sh
set -euo pipefail

port="${RABBITMQ_SCENARIO_PORT:-5682}"
conf=/etc/rabbitmq/rabbitmq-env.conf

write_conf() {
  mkdir -p /etc/rabbitmq
  # Written before the package is installed so that a postinst that starts
  # the service (where systemd runs) never binds 5672.
  cat >"$conf" <<EOF
NODE_PORT=$port
DIST_PORT=$((port + 20000))
NODENAME=rabbit@localhost
# >1000 sockets for many_connections.py (the default ulimit allows ~830)
ulimit -n 16384 2>/dev/null || true
EOF
}

install() {
  if ! command -v rabbitmq-server >/dev/null; then
    write_conf
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >/dev/null
  fi
  grep -q "^NODE_PORT=$port\$" "$conf" 2>/dev/null || write_conf
}

running() { rabbitmqctl -q status >/dev/null 2>&1; }

case "${1:-status}" in
  start)
    install
    if running; then
      echo "RabbitMQ already running"
    else
      rabbitmq-server -detached
      for _ in $(seq 1 60); do running && break; sleep 1; done
      running || { echo "RabbitMQ did not start; see /var/log/rabbitmq/" >&2; exit 1; }
      rabbitmqctl -q await_startup >/dev/null 2>&1 || true
    fi
    rabbitmqctl -q status | grep -E "RabbitMQ version|Node name" || true
    echo "AMQP_URL='amqp://guest:guest@127.0.0.1:$port/%2F'"
    ;;
  stop)
    if running; then rabbitmqctl -q stop; fi
    echo "RabbitMQ stopped"
    ;;
  status)
    if running; then rabbitmqctl -q status | grep -E "RabbitMQ version|Node name" || true; else echo "not running"; exit 1; fi
    ;;
  *)
    sed -n '2,10p' "$0"
    exit 2
    ;;
esac
