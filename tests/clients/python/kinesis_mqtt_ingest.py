#!/usr/bin/env python3
"""paho-mqtt + boto3: MQTT publishes matching `[aws.kinesis] mqtt_ingest` (sensors/+/temp ->
stream `telemetry`, partition key = topic level 1) are readable with Kinesis GetRecords, in
order per device; other topics are not ingested. The broker runs with that mapping."""

import os
import time

from _kinesis_common import check, client, eq, main, read_shard, test

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

kin = client()


@test
def mqtt_publishes_land_in_the_stream():
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ingest-test")
    c.connect(os.environ["MQTT_HOST"], int(os.environ["MQTT_PORT"]))
    c.loop_start()
    infos = [c.publish("sensors/dev%d/temp" % (i % 3), b"t%d" % i, qos=1) for i in range(12)]
    infos.append(c.publish("other/dev9/temp", b"not-ingested", qos=1))
    for info in infos:
        info.wait_for_publish(10)
    c.loop_stop()
    c.disconnect()
    shards = kin.list_shards(StreamName="telemetry")["Shards"]
    deadline = time.monotonic() + 10
    while True:
        recs = []
        for sh in shards:
            recs.extend(read_shard(kin, "telemetry", sh["ShardId"])[0])
        if len(recs) >= 12 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    eq(len(recs), 12, "every matching publish, nothing else")
    by_key = {}
    for r in sorted(recs, key=lambda r: int(r["SequenceNumber"])):
        by_key.setdefault(r["PartitionKey"], []).append(r["Data"])
    eq(sorted(by_key), ["dev0", "dev1", "dev2"], "partition key = topic level 1")
    for d in range(3):
        eq(by_key["dev%d" % d], [b"t%d" % i for i in range(12) if i % 3 == d], "order of dev%d" % d)
    check(all(r["Data"] != b"not-ingested" for r in recs), "other topics stay out")


if __name__ == "__main__":
    main()
