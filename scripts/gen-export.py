#!/usr/bin/env python3
"""Synthetic IoT Hub export (devices.txt) for benchmarks: N devices with realistic twins.

Lines average ~750 bytes: SAS keys (random, incompressible, as in real exports), tags, desired and
reported properties, every 50th device an IoT Edge gateway with $edgeAgent/$edgeHub and one
custom module, leaf devices under a gateway carry deviceScope/parentScopes. Output is in
(id, moduleId) order; shuffle it with `shuf` for the unsorted case. Deterministic per --seed.
"""
import argparse
import base64
import json
import random
import sys


def key(rng):
    return base64.b64encode(rng.randbytes(32)).decode()


def device(rng, i, gateway):
    dev_id = f"device-{i:08d}"
    edge = i % 50 == 0
    line = {
        "id": dev_id,
        "eTag": base64.b64encode(str(rng.randrange(10**9)).encode()).decode(),
        "status": "disabled" if i % 97 == 0 else "enabled",
        "statusReason": "decommissioned" if i % 97 == 0 else "",
        "authentication": {
            "symmetricKey": {"primaryKey": key(rng), "secondaryKey": key(rng)},
            "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
            "type": "sas",
        },
        "twinETag": base64.b64encode(rng.randrange(1 << 32).to_bytes(8, "big")).decode(),
        "tags": {
            "site": f"plant-{i % 37}",
            "building": f"B{i % 7}",
            "floor": i % 5,
            "owner": rng.choice(["ops", "maintenance", "quality", "energy"]),
            "installed": f"20{18 + i % 8}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        },
        "properties": {
            "desired": {
                "telemetryIntervalSec": rng.choice([10, 30, 60, 300]),
                "thresholds": {"temperature": round(rng.uniform(40, 90), 1), "vibration": round(rng.uniform(0.1, 2), 2)},
                "firmware": {"version": f"2.{i % 9}.{i % 13}", "channel": "stable"},
            },
            "reported": {
                "firmware": {"version": f"2.{i % 9}.{i % 13}", "status": "current"},
                "telemetry": {"temperature": round(rng.uniform(10, 80), 2), "uptimeSec": rng.randrange(10**7)},
                "network": {"rssi": -rng.randrange(30, 95), "ip": f"10.{i % 256}.{(i >> 8) % 256}.{rng.randrange(1, 255)}"},
            },
        },
        "capabilities": {"iotEdge": edge},
    }
    if edge:
        line["deviceScope"] = f"ms-azure-iot-edge://{dev_id}-{rng.randrange(10**17, 10**18)}"
    elif gateway:
        line["deviceScope"] = gateway
        line["parentScopes"] = [gateway]
    return line


def module(rng, dev_id, module_id):
    return {
        "id": dev_id,
        "moduleId": module_id,
        "eTag": "MQ==",
        "status": "enabled",
        "authentication": None if module_id.startswith("$") else {
            "symmetricKey": {"primaryKey": key(rng), "secondaryKey": key(rng)},
            "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
            "type": "sas",
        },
        "twinETag": "AAAAAAAAAAE=",
        "tags": {},
        "properties": {"desired": {}, "reported": {}},
        "capabilities": {"iotEdge": False},
    }


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--devices", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    rng = random.Random(args.seed)
    out = sys.stdout
    write = out.write
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    gateway = None
    for i in range(args.devices):
        d = device(rng, i, gateway)
        write(dumps(d))
        write("\n")
        if d["capabilities"]["iotEdge"]:
            gateway = d["deviceScope"]
            for m in ("$edgeAgent", "$edgeHub", "opcPublisher"):
                write(dumps(module(rng, d["id"], m)))
                write("\n")


if __name__ == "__main__":
    main()
