#!/bin/bash
# psched.sh DIR|mosq OUT : perf sched record 4 s (whole system) during a latency run
D=$1; OUT=$2; LG=${LG:-./target/release/loadgen}
if [ "$D" = mosq ]; then
  mosquitto -c /tmp/mq/mosq.conf > /tmp/mq/mosq.log 2>&1 & PID=$!; PORT=18890; sleep 0.5
else
  rm -rf $D/dl
  $D/switchyard --mqtt-listen 127.0.0.1:18880 --stomp-listen 127.0.0.1:0 --aws-listen 127.0.0.1:0 --ws-stomp-listen 127.0.0.1:0 --ws-mqtt-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --amqp-listen 127.0.0.1:0 --data-dir $D/dl --log warn > $D/l.log 2>&1 & PID=$!; PORT=18880
  for i in $(seq 1 50); do grep -q ready $D/l.log && break; sleep 0.1; done
fi
$LG latency --protocol mqtt --url mqtt://127.0.0.1:$PORT --size 1024 --qos 1 --confirm 100 --rate 1000 --warmup 1 --duration 7 --no-progress 2>/dev/null | python3 -c '
import json,sys
for l in sys.stdin:
  r=json.loads(l); L=r.get("latency_us") or {}
  print("p50 %s p99 %s p999 %s" % (L.get("p50"),L.get("p99"),L.get("p999")))' &
L=$!
sleep 3
perf sched record -o $OUT -- sleep 4 2>/dev/null >/dev/null
wait $L
kill $PID; wait $PID 2>/dev/null
