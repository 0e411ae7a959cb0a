#!/bin/bash
# usage: abm.sh ROUNDS DIR1 [DIR2 ...]  -> alternating MQTT QoS1 latency (1000 msg/s, 8 s) vs mosquitto
# DIR "mosq" = mosquitto. Each DIR holds switchyard + loadgen (loadgen from first switchyard dir / LG env).
R=$1; shift
LG=${LG:-./target/release/loadgen}
one() {
  local D=$1 PORT PID
  if [ "$D" = mosq ]; then
    mosquitto -c /tmp/mq/mosq.conf > /tmp/mq/mosq.log 2>&1 & PID=$!; PORT=18890; sleep 0.5
  else
    rm -rf $D/dl
    ${PRE} $D/switchyard --mqtt-listen 127.0.0.1:18880 --stomp-listen 127.0.0.1:0 --aws-listen 127.0.0.1:0 --ws-stomp-listen 127.0.0.1:0 --ws-mqtt-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --amqp-listen 127.0.0.1:0 --data-dir $D/dl --log warn > $D/l.log 2>&1 & PID=$!; PORT=18880
    for i in $(seq 1 50); do grep -q ready $D/l.log && break; sleep 0.1; done
  fi
  $LG latency --protocol mqtt --url mqtt://127.0.0.1:$PORT --size 1024 --qos 1 --confirm 100 --rate 1000 --warmup 2 --duration ${DUR:-8} --no-progress 2>/dev/null | python3 -c '
import json,sys
for l in sys.stdin:
  r=json.loads(l); L=r.get("latency_us") or {}; P=r.get("pacing_lag_us") or {}
  print("%-12s p50 %5s p99 %5s p999 %5s max %6s | pace p99 %5s" % (sys.argv[1][-12:], L.get("p50"),L.get("p99"),L.get("p999"),L.get("max"),P.get("p99")))' $D
  kill $PID; wait $PID 2>/dev/null
}
for r in $(seq 1 $R); do for D in "$@"; do one $D; done; done
