"""What InfluxDB's own Python clients make of perch's /ping and /health.

Usage: influx_ping.py HOST PORT; prints one JSON object:
  v1_ping     influxdb (1.x) InfluxDBClient.ping(): the version it read
  v2_ping     influxdb_client (2.x) InfluxDBClient.ping(): True or False
  v2_version  influxdb_client's version(): the X-Influxdb-Version header
  v2_health   influxdb_client's health(): status and message
"""

import json
import sys

import influxdb
import influxdb_client

host, port = sys.argv[1], int(sys.argv[2])
out = {}
v1 = influxdb.InfluxDBClient(host=host, port=port, timeout=10)
out["v1_ping"] = v1.ping()
with influxdb_client.InfluxDBClient(url=f"http://{host}:{port}", token="none", timeout=10_000) as v2:
    out["v2_ping"] = v2.ping()
    out["v2_version"] = v2.version()
    health = v2.health()
    out["v2_health"] = {"status": str(health.status), "message": health.message}
print(json.dumps(out))
