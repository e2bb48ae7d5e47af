#!/usr/bin/env python3
"""What TLS costs the reactor per message, against plain TCP, in one interleaved run.

Makes a throwaway CA and server certificate with openssl, then in each round runs the
release reactor plain and with --tls-cert/--tls-key, drives each with loadgen (lockstep,
--connections N for --seconds), and reads the server's CPU time from /proc/PID/stat. Prints
each round's server CPU per message and msgs/s, and the median of the per-round ratios
(TLS / plain). A last pass measures new TLS connections per second
(--requests-per-connection 1), and with --idle N the server's memory per idle connection,
plain and TLS: N connections opened one by one (Python's ssl module, verifying the
certificate), each greeted, then held while the server's RSS is read. Loopback only,
bounded, Linux only (/proc).

    cargo build --release
    python3 scripts/tls-cost.py --connections 100 --seconds 3 --rounds 5 --idle 10000
"""
import argparse
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
TICKS = os.sysconf("SC_CLK_TCK")


def certificates(d):
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *a: subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "ext")


def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure(d, tls, connections, seconds, extra=()):
    args = [os.path.join(BIN, "reactor"), "--listen", "127.0.0.1:0", "--no-udp",
            "--max-connections", "20000"]
    if tls:
        args += ["--tls-cert", f"{d}/server.pem", "--tls-key", f"{d}/server.key"]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        addr = next(f.split("=", 1)[1] for f in server.stdout.readline().split()
                    if f.startswith("tcp="))
        before = cpu(server.pid)
        lg = [os.path.join(BIN, "loadgen"), "--addr", addr, "--connections", str(connections),
              "--duration", str(seconds), "--json", *extra]
        if tls:
            lg += ["--tls", "--tls-ca", f"{d}/ca.pem"]
        report = json.loads(subprocess.run(lg, capture_output=True, text=True, check=True).stdout)
        used = cpu(server.pid) - before
    finally:
        server.terminate()
        server.wait()
    return report, used


def rss_kib(pid):
    line = next(l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
    return int(line.split()[1])


def idle(d, tls, count):
    """Bytes of server RSS per idle connection, `count` of them."""
    args = [os.path.join(BIN, "reactor"), "--listen", "127.0.0.1:0", "--no-udp",
            "--max-connections", str(count + 100), "--idle-timeout", "0"]
    if tls:
        args += ["--tls-cert", f"{d}/server.pem", "--tls-key", f"{d}/server.key"]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    held = []
    try:
        addr = next(f.split("=", 1)[1] for f in server.stdout.readline().split()
                    if f.startswith("tcp="))
        host, port = addr.rsplit(":", 1)
        before = rss_kib(server.pid)
        context = ssl.create_default_context(cafile=f"{d}/ca.pem")
        for _ in range(count):
            sock = socket.create_connection((host, int(port)), timeout=10)
            if tls:
                sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
            greeting = b""
            while not greeting.endswith(b"\n"):
                chunk = sock.recv(64)
                if not chunk:
                    sys.exit("the server closed a connection while they were being opened")
                greeting += chunk
            held.append(sock)
        after = rss_kib(server.pid)
    finally:
        for sock in held:
            sock.close()
        server.terminate()
        server.wait()
    return (after - before) * 1024 / count


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--idle", type=int, default=0, help="also measure N idle connections")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        certificates(d)
        ratios = []
        for r in range(1, args.rounds + 1):
            per = {}
            for tls in (False, True):
                report, used = measure(d, tls, args.connections, args.seconds)
                if report["errors"]:
                    sys.exit(f"errors in round {r}: {report}")
                per[tls] = used * 1e6 / report["messages"]
                print(f"round {r} {'tls  ' if tls else 'plain'} {report['msgs_per_sec']:>9.0f} msgs/s"
                      f"  server {per[tls]:.2f} µs CPU per message  p99 {report['p99_us']} µs")
            ratios.append(per[True] / per[False])
        print("TLS/plain server CPU per message, per round:", ", ".join(f"{x:.2f}" for x in ratios),
              f"; median {statistics.median(ratios):.2f}")
        report, used = measure(d, True, 10, args.seconds, ["--requests-per-connection", "1"])
        print(f"new TLS connections: {report['tls_handshakes_per_sec']:.0f} handshakes/s with 10"
              f" clients, {used * 1e6 / max(report['tls_handshakes'], 1):.0f} µs of server CPU each"
              f" (greeting, one reply and the close included), errors {report['errors']}")
        if args.idle:
            for tls in (False, True):
                print(f"{'TLS' if tls else 'plain'}: {idle(d, tls, args.idle):.0f} bytes of server"
                      f" RSS per idle connection, {args.idle} of them")


if __name__ == "__main__":
    main()
