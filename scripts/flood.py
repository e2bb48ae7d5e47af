#!/usr/bin/env python3
"""Floods a server with clients that pipeline empty lines as fast as the kernel takes them
and never read their replies, and measures from outside what an honest client gets
meanwhile. Loopback only; stops by itself after --seconds.

  scripts/flood.py --clients 2000 --seconds 12 -- target/release/reactor --shutdown-grace 3

It starts the server itself (the command after `--`, with `--listen 127.0.0.1:0` added),
and prints: the server's peak RSS (VmHWM), the host's TCP memory (/proc/net/sockstat), the worst and median latency of a fresh TCP
client (connect, greeting, one reply; one a second) and of a UDP ping (every 100 ms), how
long after SIGTERM the server logged that it was shutting down, and when it exited.
"""
import argparse, multiprocessing, os, re, resource, selectors, signal, socket, statistics, subprocess, sys, threading, time
from datetime import datetime, timezone

ap = argparse.ArgumentParser()
ap.add_argument('--clients', type=int, default=2000)
ap.add_argument('--seconds', type=float, default=12)
ap.add_argument('--client-send-buffer', type=int, default=0,
                help="SO_SNDBUF for the flooding clients (0: the kernel's autotuning)")
ap.add_argument('--client-recv-buffer', type=int, default=0,
                help="SO_RCVBUF for the flooding clients (0: the kernel's autotuning). On one "
                     "machine the clients' kernel memory counts against the same tcp_mem as "
                     "the server's; a small one plays clients on other machines")
ap.add_argument('server', nargs=argparse.REMAINDER)
a = ap.parse_args()
cmd = [c for c in a.server if c != '--'] + ['--listen', '127.0.0.1:0', '--max-connections', '19000']
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
m = re.search(r'tcp=([\d.]+):(\d+) udp=(\S+)', srv.stdout.readline())
host, port = m.group(1), int(m.group(2))
log = []
threading.Thread(target=lambda: log.extend(srv.stderr), daemon=True).start()

flood = b'\n' * 65536
sel = selectors.DefaultSelector()
socks = []
for i in range(a.clients):
    s = socket.socket()
    if a.client_send_buffer:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, a.client_send_buffer)
    if a.client_recv_buffer:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.client_recv_buffer)
    s.connect((host, port)); s.setblocking(False)
    sel.register(s, selectors.EVENT_WRITE); socks.append(s)
stop = time.time() + a.seconds

def tcp_mem_mib():
    """The host's TCP memory (all sockets), from /proc/net/sockstat, in MiB."""
    for line in open('/proc/net/sockstat'):
        if line.startswith('TCP:'):
            f = line.split()
            return int(f[f.index('mem') + 1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
    return 0.0

def probe(results):
    """Runs in a process of its own, so the flood's Python loop cannot delay it."""
    tcp_lat, udp_lat, udp_lost, mem_peak, tcp_phases = [], [], 0, 0.0, []
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10)
    next_tcp = time.time() + 1
    while time.time() < stop - 0.5:
        t = time.time()
        mem_peak = max(mem_peak, tcp_mem_mib())
        try:
            u.sendto(b'ping', (host, port)); u.recvfrom(100); udp_lat.append(time.time() - t)
        except OSError:
            udp_lost += 1
        if time.time() >= next_tcp:
            next_tcp += 1; t = time.time()
            try:
                c = socket.create_connection((host, port), timeout=10)
                connected = time.time() - t
                got = b''
                while not got.endswith(b'Welcome!\n'): got += c.recv(100)
                greeted = time.time() - t
                c.sendall(b'hi\n'); got = b''
                while not got.endswith(b'Hello, hi!\n'): got += c.recv(100)
                tcp_lat.append(time.time() - t); c.close()
                tcp_phases.append((tcp_lat[-1], connected, greeted))
            except OSError:
                tcp_lat.append(float('inf'))
        time.sleep(max(0, 0.1 - (time.time() - t)))
    results.put((tcp_lat, udp_lat, udp_lost, mem_peak, max(tcp_phases, default=None)))

results = multiprocessing.Queue()
th = multiprocessing.Process(target=probe, args=(results,)); th.start()
sent = 0
t_sig = None
# Flood until the server exits: SIGTERM is sent at the end of the measured period, while
# the flood goes on, so the time to act on it is measured under load.
while srv.poll() is None and time.time() < stop + 30:
    if t_sig is None and time.time() >= stop:
        hwm = int(re.search(r'VmHWM:\s+(\d+)', open(f'/proc/{srv.pid}/status').read()).group(1))
        t_sig = time.time(); srv.send_signal(signal.SIGTERM)
    for key, _ in sel.select(0.05):
        try: sent += key.fileobj.send(flood)
        except BlockingIOError: pass
        except OSError: sel.unregister(key.fileobj)
if srv.poll() is None: srv.kill()
srv.wait()
t_exit = time.time() - t_sig
tcp_lat, udp_lat, udp_lost, tcp_mem_peak, worst_phases = results.get()
th.join()
acted = None
for line in log:
    if 'shutting down' in line:
        ts = datetime.strptime(line[1:24], '%Y-%m-%dT%H:%M:%S.%f').replace(tzinfo=timezone.utc).timestamp()
        acted = ts - t_sig; break
summary = [l.strip() for l in log if 'served' in l or 'longest' in l]
for s in socks: s.close()
ms = lambda xs: f"worst {max(xs)*1000:.0f} ms, median {statistics.median(xs)*1000:.1f} ms ({len(xs)} probes)" if xs else "none"
print(f"clients {a.clients}, flooded {sent/2**20:.0f} MiB in {a.seconds:.0f} s")
print(f"server peak RSS {hwm/1024:.0f} MiB; the host's TCP memory peaked at {tcp_mem_peak:.0f} MiB")
print(f"fresh TCP client: {ms(tcp_lat)}")
if worst_phases:
    total, connected, greeted = worst_phases
    print(f"  the worst: connected after {connected*1000:.0f} ms, greeted after {greeted*1000:.0f} ms, answered after {total*1000:.0f} ms")
print(f"UDP ping: {ms(udp_lat)}, lost {udp_lost}")
print(f"SIGTERM: logged {acted*1000:.0f} ms after the signal, exited after {t_exit*1000:.0f} ms" if acted is not None else f"SIGTERM: exited after {t_exit*1000:.0f} ms")
for s in summary: print("summary:", s[-200:])
