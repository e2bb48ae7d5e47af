#!/usr/bin/env python3
"""Throughput and latency through HAProxy against the same load driven directly.

Starts two reactors with --proxy-protocol and an HAProxy in front of them (send-proxy-v2),
all on loopback, then runs loadgen in interleaved rounds: once straight at the first
reactor (sending its own PROXY v2 header) and once through HAProxy, with the same
connections and duration. Prints each round and the median of the per-round ratios
(HAProxy / direct). Loopback only, bounded: rounds x 2 x duration seconds, then everything
it started is stopped.

    cargo build --release
    python3 scripts/behind-haproxy.py --connections 100 --seconds 5 --rounds 3
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")


def reactor():
    proc = subprocess.Popen(
        [os.path.join(BIN, "reactor"), "--listen", "127.0.0.1:0", "--no-udp", "--proxy-protocol"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The startup line: `listening tcp=127.0.0.1:PORT udp=off`.
    first = proc.stdout.readline().split()
    addr = next(f.split("=", 1)[1] for f in first if f.startswith("tcp="))
    return proc, addr


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--front", default="127.0.0.1:7200", help="HAProxy's listening address")
    args = ap.parse_args()
    if shutil.which("haproxy") is None:
        sys.exit("needs HAProxy: apt-get install haproxy")

    backends = [reactor(), reactor()]
    cfg = tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False)
    cfg.write("defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n"
              "    timeout server 30s\n"
              f"frontend clients\n    bind {args.front}\n    default_backend reactors\n"
              "backend reactors\n    balance roundrobin\n"
              + "".join(f"    server r{i} {addr} send-proxy-v2\n"
                        for i, (_, addr) in enumerate(backends)))
    cfg.close()
    balancer = subprocess.Popen(["haproxy", "-f", cfg.name, "-db"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ratios = []
        for r in range(1, args.rounds + 1):
            rates = {}
            for target, extra in (("direct", ["--addr", backends[0][1], "--proxy-protocol", "v2"]),
                                  ("haproxy", ["--addr", args.front])):
                out = subprocess.run(
                    [os.path.join(BIN, "loadgen"), *extra, "--connections", str(args.connections),
                     "--duration", str(args.seconds), "--source", "127.0.0.2,127.0.0.3,127.0.0.4",
                     "--json"], capture_output=True, text=True, check=True).stdout
                j = json.loads(out)
                rates[target] = j["msgs_per_sec"]
                print(f"round {r} {target:8} {j['msgs_per_sec']:>10.0f} msgs/s  p50 {j['p50_us']} µs"
                      f"  p99 {j['p99_us']} µs  errors {j['errors']}  connected {j['connected']}")
            ratios.append(rates["haproxy"] / rates["direct"])
        print("haproxy/direct per round:", ", ".join(f"{x:.2f}" for x in ratios),
              f"; median {statistics.median(ratios):.2f}")
    finally:
        balancer.terminate()
        balancer.wait()
        for proc, _ in backends:
            proc.send_signal(signal.SIGTERM)
        for proc, addr in backends:
            _, err = proc.communicate(timeout=10)
            print(f"reactor {addr}: {err.strip().splitlines()[-1]}")
        os.unlink(cfg.name)


if __name__ == "__main__":
    main()
