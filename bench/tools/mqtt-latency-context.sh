#!/bin/bash
# ctx.sh ROUNDS DIR : MQTT QoS1 latency (20 s) on a fresh broker (A), after the MQTT throughput
# scenarios (B), and Mosquitto (C), alternating.
R=$1; D=$2; LG=${LG:-./target/release/loadgen}
lat() { $LG latency --protocol mqtt --url mqtt://127.0.0.1:$1 --size 1024 --qos 1 --confirm 100 --rate 1000 --warmup 2 --duration ${DUR:-20} --no-progress 2>/dev/null | python3 -c '
import json,sys
for l in sys.stdin:
  r=json.loads(l); L=r.get("latency_us") or {}
  print("%-8s p50 %6.1f p90 %6.1f p99 %6.1f p999 %7.1f" % (sys.argv[1], L.get("p50"),L.get("p90"),L.get("p99"),L.get("p999")))' $2; }
start_sy() { rm -rf $D/dl; ${PRE} $D/switchyard --mqtt-listen 127.0.0.1:18880 --stomp-listen 127.0.0.1:0 --aws-listen 127.0.0.1:0 --ws-stomp-listen 127.0.0.1:0 --ws-mqtt-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --amqp-listen 127.0.0.1:0 --data-dir $D/dl --log warn > $D/l.log 2>&1 & PID=$!
  for i in $(seq 1 50); do grep -q ready $D/l.log && break; sleep 0.1; done; }
quiet() { sleep ${Q:-2}; }
for r in $(seq 1 $R); do
  start_sy; quiet; lat 18880 fresh; kill $PID; wait $PID 2>/dev/null
  start_sy
  for a in "e2e --qos 0" "e2e --qos 1 --confirm 100" "fanout --qos 0 --consumers 10" "fanout --qos 1 --confirm 100 --consumers 10 --max-inflight 1000"; do
    $LG $a --protocol mqtt --url mqtt://127.0.0.1:18880 --size 1024 --warmup 2 --duration 10 --no-progress >/dev/null 2>&1
  done
  echo "after: rss $(awk '/VmRSS/{print $2}' /proc/$PID/status) KiB"
  quiet; lat 18880 after; kill $PID; wait $PID 2>/dev/null
  mosquitto -c /tmp/mq/mosq.conf > /tmp/mq/mosq.log 2>&1 & MP=$!; sleep 0.5; quiet; lat 18890 mosq; kill $MP; wait $MP 2>/dev/null
done
