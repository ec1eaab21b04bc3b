#!/usr/bin/env python3
"""Writes the seed corpora of perch's text and packet fuzz targets into
fuzz/corpus/<target>/ from the project's own fixtures and tests: the device
corpus (tests/fixtures/devices), the PromQL corpus, the example payloads of
seed-payloads.md, string literals of the parsers' unit tests, the TOML
examples of the docs, and hand-made MQTT packets. Files are named by the
SHA-1 of their content, so running it again adds nothing twice.

The binary targets are seeded from what perch itself wrote: the WAL
segments and block files of a data directory perch was killed on
(--perch-data; block bodies are cut out of the block files' records, and
their columns out of the blocks) and a backup tar from GET /api/v1/backup
(--backup). codec_roundtrip's seeds are generated here.

Usage: fuzz/seeds.py [--shared DIR] [--perch-data DIR] [--backup TAR]
"""

import argparse
import glob
import hashlib
import os
import re
import struct
import sys
import tomllib

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(FUZZ, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


# "...", r"...", r#"..."# literals of a Rust file (escapes left as written,
# but for \n and \" and \\, which are common in the tests).
LITERAL = re.compile(r'r#"(.*?)"#|r"(.*?)"|"((?:[^"\\\n]|\\.)*)"', re.S)


def literals(path):
    out = []
    for m in LITERAL.finditer(read(path)):
        raw1, raw2, plain = m.groups()
        if raw1 is not None:
            out.append(raw1)
        elif raw2 is not None:
            out.append(raw2)
        else:
            out.append(plain.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\"))
    return [s for s in out if s]


def rust_files(pattern):
    return sorted(glob.glob(os.path.join(ROOT, pattern), recursive=True))


def rel(p):
    return os.path.relpath(p, ROOT)


def device_messages():
    """(file name, [(topic, payload)]) per device corpus file."""
    out = []
    for p in sorted(glob.glob(os.path.join(ROOT, "tests/fixtures/devices/*.toml"))):
        with open(p, "rb") as f:
            doc = tomllib.load(f)
        out.append((os.path.basename(p), [(m["topic"], m["payload"]) for m in doc["message"]]))
    return out


def seed_payload_blocks(shared):
    """The fenced code blocks of seed-payloads.md."""
    path = os.path.join(shared, "seed-payloads.md")
    if not os.path.exists(path):
        return []
    text = open(path, encoding="utf-8").read()
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.S)


def line_protocol(blocks):
    bodies = [
        "system,host=edge01 cpu_percent=12.5,mem_total=3977560064i,mem_used=1048576000i,mem_percent=26.4",
        'weather,location=us-midwest,season=summer temperature=82,ok=true,note="a \\"quoted\\" word" 1465839830100400200',
        "cpu\\,x,tag\\ a=b\\=c load=1u,up=t,down=F -1\n# comment\n\n  m v=1e308 9223372036854775807\r\n",
        "JNU_rasp,id=RaspberryPi alcohol_gas=9i,co_gas=117i,dust=0.05,latitude=35.17959,light=554i,longitude=126.90822,temp=26.52 1505724776794724369",
    ]
    for b in blocks:
        bodies += [l for l in b.splitlines() if " " in l and "=" in l and not l.startswith("{")]
    for p in rust_files("crates/ingest/src/line_protocol*/**/*.rs") + rust_files(
        "crates/ingest/src/line_protocol.rs"
    ):
        bodies += [s for s in literals(p) if " " in s and "=" in s]
    for i, body in enumerate(bodies):
        # First byte: precision (ns, us, ms, s, m, h) and the topic label.
        write("line_protocol", bytes([i % 6 | (i & 1) << 3]) + body.encode())


def opentsdb(blocks):
    bodies = [
        '{"metric":"sys.cpu.nice","timestamp":1346846400,"value":18,"tags":{"host":"web01","dc":"lga"}}',
        '[{"metric":"a","timestamp":1346846400123,"value":"NaN","tags":{"x":"y"}},{"metric":"b","timestamp":1,"value":1e400,"tags":{}}]',
    ]
    bodies += [b for b in blocks if b.lstrip().startswith("[")]
    for p in rust_files("crates/ingest/src/opentsdb.rs"):
        bodies += [s for s in literals(p) if "metric" in s]
    for b in bodies:
        write("opentsdb", b)


def vm_import():
    bodies = [
        '{"metric":{"__name__":"up","job":"node"},"values":[1,0,null,"NaN","+Inf"],"timestamps":[1549891472010,1549891487724,1549891503438,1,2]}\n'
        '{"metric":{"__name__":"up","job":"node"},"values":[1],"timestamps":[1549891518000]}',
    ]
    for p in rust_files("crates/ingest/src/vm_import.rs"):
        bodies += [s for s in literals(p) if "metric" in s]
    for b in bodies:
        write("vm_import", b)


def mqtt_payload(blocks, devices):
    msgs = [
        ("stations/JNU/rasp1/record", '{"device_id":"rasp1","status":1,"time":"2017-09-18T08:52:56Z","temp":-999,"light":554,"alcohol_gas":-1}'),
        ("ignored/x", "1"),
        ("home/temp/kitchen", "21.5"),
        ("home/switch/a", "ON"),
        ("sensors/a", "nan"),
    ]
    for b in blocks:
        for payload in [b] + b.splitlines():
            if payload.strip():
                msgs.append(("edge01/stats", payload))
    for _, ms in devices:
        msgs += ms
    for topic, payload in msgs:
        write("mqtt_payload", topic.encode() + b"\0" + payload.encode())


def conventions(devices):
    for _, ms in devices:
        for start in range(0, len(ms), 6):
            chunk = ms[start : start + 6]
            body = b"\0".join(t.encode() + b"\0" + p.encode() for t, p in chunk)
            # Discovery configs first as retained replays, then live.
            learn = sum(1 << i for i, (t, _) in enumerate(chunk) if t.endswith("/config"))
            write("conventions", bytes([learn]) + body)


def mqtt_string(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def remaining(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + remaining(len(body)) + body


def mqtt_codec():
    # CONNECT v3.1.1: clean session, keep-alive 60, client id "c1".
    connect4 = packet(0x10, mqtt_string("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 60) + mqtt_string("c1"))
    # CONNECT v3.1.1 with a will (QoS 1, retained), user name and password.
    connect4_full = packet(
        0x10,
        mqtt_string("MQTT")
        + bytes([4, 0xC0 | 0x20 | 0x08 | 0x04 | 0x02])
        + struct.pack(">H", 30)
        + mqtt_string("dev-1")
        + mqtt_string("dev/1/status")
        + mqtt_string("offline")
        + mqtt_string("user")
        + mqtt_string("secret"),
    )
    # CONNECT v5 with properties (session expiry, receive maximum).
    props5 = bytes([0x11]) + struct.pack(">I", 3600) + bytes([0x21]) + struct.pack(">H", 10)
    connect5 = packet(
        0x10,
        mqtt_string("MQTT") + bytes([5, 0x02]) + struct.pack(">H", 60) + remaining(len(props5)) + props5 + mqtt_string("c5"),
    )
    publish0 = packet(0x30, mqtt_string("sensors/kitchen/temp") + b"21.5")
    publish1 = packet(0x32, mqtt_string("tele/pow1/SENSOR") + struct.pack(">H", 1) + b'{"ENERGY":{"Power":2635}}')
    publish2r = packet(0x35, mqtt_string("a/b") + struct.pack(">H", 2) + b"x")
    # v5 PUBLISH with properties: payload format, message expiry, topic alias, user property.
    pprops = bytes([0x01, 1, 0x02]) + struct.pack(">I", 60) + bytes([0x23]) + struct.pack(">H", 3) + bytes([0x26]) + mqtt_string("k") + mqtt_string("v")
    publish5 = packet(0x32, mqtt_string("a/b") + struct.pack(">H", 7) + remaining(len(pprops)) + pprops + b"hello")
    subscribe4 = packet(0x82, struct.pack(">H", 2) + mqtt_string("sensors/#") + bytes([1]) + mqtt_string("+/x/+") + bytes([0]))
    subscribe5 = packet(0x82, struct.pack(">H", 3) + bytes([0]) + mqtt_string("$share/g/a/#") + bytes([0x2E]))
    unsubscribe = packet(0xA2, struct.pack(">H", 4) + mqtt_string("sensors/#"))
    puback = packet(0x40, struct.pack(">H", 1))
    pubrec = packet(0x50, struct.pack(">H", 2))
    pubrel = packet(0x62, struct.pack(">H", 2))
    pubcomp = packet(0x70, struct.pack(">H", 2))
    ping = packet(0xC0, b"")
    disconnect = packet(0xE0, b"")
    disconnect5 = packet(0xE0, bytes([0x04, 0]))
    rest4 = publish0 + publish1 + publish2r + subscribe4 + unsubscribe + puback + pubrec + pubrel + pubcomp + ping + disconnect
    rest5 = publish5 + subscribe5 + unsubscribe + puback + ping + disconnect5
    seeds = [
        (0, connect4 + rest4),
        (0, connect4_full + publish1),
        (1, connect5 + rest5),
        (0, rest4),
        (1, rest5),
        (0, connect4),
        (1, connect5),
        (0, publish0 + publish0[:-3]),
    ]
    for sel, body in seeds:
        write("mqtt_codec", bytes([sel]) + body)


def promql():
    for line in read("tests/fixtures/promql_corpus.txt").splitlines():
        if line.strip() and not line.startswith("#"):
            kind, _, q = line.partition(" ")
            write("promql", q)
    for p in rust_files("tests/it/promql_*.rs") + rust_files("crates/query/src/promql/tests.rs"):
        for s in literals(p):
            if any(c in s for c in "({[") and len(s) < 2000:
                write("promql", s)


def selector():
    for s in [
        'temp{site=~"s[0-9]",dev!="d3"}',
        '{__name__=~"env_.*"}',
        '{a="1" or b="2"}',
        'up',
        '{job!~"x|y", instance=""}',
        "http_requests_total{code=~\"5..\"}[5m] offset 1h",
    ]:
        write("selector", s)


def influxql():
    queries = ["SELECT * FROM JNU_rasp", "SHOW DATABASES", "SHOW MEASUREMENTS LIMIT 10"]
    for p in rust_files("crates/query/src/influxql/*.rs") + rust_files("tests/it/influxql.rs"):
        for s in literals(p):
            if re.match(r"\s*(SELECT|SHOW|select|show)\b", s):
                queries.append(s)
    for q in queries:
        write("influxql", q)


def search_query():
    queries = [
        "*",
        "motion",
        "topic:garage AND NOT motion",
        "topic:garage -motion",
        "NOT motion",
        "garage AND (NOT motion)",
        "motion OR battery",
        '"front door" AND topic:zigbee2mqtt/*',
        "payload:/tem.*/",
        "battery:[0 TO 20]",
        "temp~2 ^2.0",
    ]
    for p in rust_files("crates/search/src/*.rs") + rust_files("tests/it/search.rs"):
        for s in literals(p):
            if s.startswith("q="):
                queries.append(s[2:].split("&")[0])
    for q in queries:
        write("search_query", q)


def config():
    write("config", read("packaging/perch.toml"))
    for p in sorted(glob.glob(os.path.join(ROOT, "docs/*.md"))):
        for block in re.findall(r"```toml\n(.*?)```", open(p, encoding="utf-8").read(), re.S):
            write("config", block)
    write("config", "")
    write(
        "config",
        '[storage]\nretention = "30d"\nflush_interval = "1s"\n[[mqtt.rules]]\ntopic = "st/{site}/#"\n'
        'metric_prefix = "station_"\ndrop_values = [-999.0]\n[devices]\ntime_zone = "+01:00"\n'
        '[[forward]]\nname = "up"\nkind = "mqtt"\nurl = "mqtt://127.0.0.1:1884"\ntopics = ["#"]\n',
    )


def uvarint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return v, i


def columns_of(block):
    """(codec, n, is_values, bytes) of every column of a block body."""
    i = 2
    kind = block[1]
    n_ts, i = uvarint(block, i)
    ts_meta = []
    for _ in range(n_ts):
        n, i = uvarint(block, i)
        codec = block[i]
        ln, i = uvarint(block, i + 1)
        ts_meta.append((n, codec, ln))
    n_series, i = uvarint(block, i)
    series_meta = []
    for _ in range(n_series):
        _, i = uvarint(block, i)
        ts_col, i = uvarint(block, i)
        for _ in range(1 if kind == 0 else 5):
            codec = block[i]
            ln, i = uvarint(block, i + 1)
            series_meta.append((ts_meta[ts_col][0], codec, ln))
    out = []
    for n, codec, ln in ts_meta:
        out.append((codec, n, 0, block[i : i + ln]))
        i += ln
    for n, codec, ln in series_meta:
        out.append((codec, n, 1, block[i : i + ln]))
        i += ln
    return out


def store_files(data_dir):
    for p in sorted(glob.glob(os.path.join(data_dir, "wal", "*.wal"))):
        seg = open(p, "rb").read()
        if not seg:
            continue
        write("wal", b"\0" + seg)
        # The records alone, for the framing mode (0xA5 between them).
        payloads, i = [], 0
        while i + 8 <= len(seg):
            (ln,) = struct.unpack_from("<I", seg, i)
            payloads.append(seg[i + 8 : i + 8 + ln])
            i += 8 + ln
        write("wal", b"\1" + b"\xa5".join(payloads))
    for p in sorted(glob.glob(os.path.join(data_dir, "blocks", "*", "*.dat"))):
        data = open(p, "rb").read()
        i = 0
        while i + 25 <= len(data):
            (ln,) = struct.unpack_from("<I", data, i)
            body = data[i + 25 : i + 8 + ln]
            i += 8 + ln
            write("block", body)
            for codec, n, is_values, col in columns_of(body):
                write("column", bytes([codec]) + struct.pack("<H", n) + bytes([is_values]) + col)


def codec_roundtrip():
    t0 = 1_700_000_000_000
    series = [
        ([t0 + i * 10_000 for i in range(120)], [20.0 + (i % 13) / 10 for i in range(120)]),
        ([t0 + i * 10_000 + (i * 7919) % 37 for i in range(120)], [float(i * i) for i in range(120)]),
        ([t0 + i for i in range(8)], [float("nan"), float("inf"), -0.0, 5e-324, 1e308, -1.5, 0.1, float("-inf")]),
        ([-(2**63), -1, 0, 2**63 - 1], [1.0, 2.0, 3.0, 4.0]),
        ([t0], [42.0]),
    ]
    for ts, values in series:
        body = b"".join(struct.pack("<qd", t, v) for t, v in zip(ts, values))
        for flags in range(4):
            write("codec_roundtrip", bytes([flags]) + body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "reference"))
    ap.add_argument("--perch-data", help="a data directory perch was killed on")
    ap.add_argument("--backup", help="a backup tar from GET /api/v1/backup")
    args = ap.parse_args()
    blocks = seed_payload_blocks(args.shared)
    devices = device_messages()
    line_protocol(blocks)
    opentsdb(blocks)
    vm_import()
    mqtt_payload(blocks, devices)
    conventions(devices)
    mqtt_codec()
    promql()
    selector()
    influxql()
    search_query()
    config()
    codec_roundtrip()
    if args.perch_data:
        store_files(args.perch_data)
    if args.backup:
        write("backup_restore", open(args.backup, "rb").read())
    for t in sorted(os.listdir(os.path.join(FUZZ, "corpus"))):
        print(f"{t}: {len(os.listdir(os.path.join(FUZZ, 'corpus', t)))} seeds")


main()
