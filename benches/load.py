"""Driving load and accounting for it: wrk rounds with each proxy's CPU, memory and upstream
connections; new inbound mTLS connections; idle keep-alive connections.

Run as a script, `load.py --idle-client PORT N` is the client of the idle-connection measurement:
it opens N connections, makes one token GET on each, prints READY, and holds them until stdin closes.
"""

import asyncio
import json
import multiprocessing as mp
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time

import common
from common import HZ, P, TOKEN_PATH, write
from peers import mval, upstream_accepts
from procs import busy_ticks, cpu_split, cpu_ticks, established, own_ticks, rss_kib, tree

# ---------------------------------------------------------------- wrk

WRK_LUA = r"""
wrk.headers["x-server-key"] = "k"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
"""


def wrk(port, conns, secs, threads=1):
    """One wrk run of the token GET; its summary (requests, errors, req/s, latency percentiles)."""
    lua = os.path.join(common.WORK, "bench.lua")
    if not os.path.exists(lua):
        write("bench.lua", WRK_LUA)
    cmd = [common.ARGS.wrk, f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--timeout", "5s", "-s", lua,
           f"http://127.0.0.1:{port}{TOKEN_PATH}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60)
    for line in r.stdout.splitlines():
        if line.startswith("WRKJSON "):
            d = json.loads(line[8:])
            d["errors"] = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
            d["rps"] = d["requests"] / (d["duration_us"] / 1e6)
            return d
    raise RuntimeError(f"wrk gave no summary: {r.stdout}\n{r.stderr}")


class Sampler(threading.Thread):
    """Peak summed VmRSS of a process tree while a round runs."""

    def __init__(self, pid, every=0.2):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.halt = pid, every, 0, threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.peak = max(self.peak, rss_kib(tree(self.pid)))
            self.halt.wait(self.every)

    def finish(self):
        self.halt.set()
        self.join()
        self.peak = max(self.peak, rss_kib(tree(self.pid)))
        return self.peak


def measured_round(px, conns, secs):
    """One wrk round against a proxy, with its CPU, peak RSS and upstream connection figures."""
    pids = px.pids() if px else []
    us0, sy0 = cpu_split(pids)
    t0 = us0 + sy0
    b0, o0, u0, w0 = busy_ticks(), own_ticks(), cpu_ticks(tree(common.UPSTREAM.pid)), time.time()
    a0 = upstream_accepts()
    m0 = px.metrics() if px else {}
    s = Sampler(px.p.pid) if px else None
    if s:
        s.start()
    w = wrk(px.port if px else P["up_plain"], conns, secs)
    peak = s.finish() if s else 0
    pids_after = px.pids() if px else []
    us1, sy1 = cpu_split(pids_after)
    t1 = us1 + sy1
    b1, o1, u1, w1 = busy_ticks(), own_ticks(), cpu_ticks(tree(common.UPSTREAM.pid)), time.time()
    a1 = upstream_accepts()
    m1 = px.metrics() if px else {}
    r = dict(w)
    r["upstream_cpu_cores"] = (u1 - u0) / HZ / (w1 - w0)
    r["loadgen_cpu_cores"] = (o1 - o0) / HZ / (w1 - w0)
    # CPU used during the round by processes that are not part of the benchmark (other jobs on the machine)
    r["foreign_cpu_cores"] = max((b1 - b0) - (t1 - t0) - (u1 - u0) - (o1 - o0), 0) / HZ / (w1 - w0)
    if px:
        ok = max(w["requests"] - w["errors"], 1)
        r["cpu_s"] = (t1 - t0) / HZ
        r["cpu_us_per_req"] = (t1 - t0) / HZ * 1e6 / max(w["requests"], 1)
        r["sys_us_per_req"] = (sy1 - sy0) / HZ * 1e6 / max(w["requests"], 1)
        r["peak_rss_kib"] = peak
        r["upstream_conns"] = established(pids_after, remote_port=P["up_tls"])
        # new connections the upstream accepted during the round (one is the stub_status poll)
        r["upstream_new_conns"] = max(a1 - a0 - 1, 0)
        r["upstream_new_conns_per_10k"] = r["upstream_new_conns"] * 1e4 / ok
        if px.kind == "ours":
            hs = mval(m1, "amity_proxy_upstream_handshakes_total") - mval(m0, "amity_proxy_upstream_handshakes_total")
            rq = mval(m1, "amity_proxy_upstream_requests_total") - mval(m0, "amity_proxy_upstream_requests_total")
            r["metrics_handshakes"] = hs
            r["metrics_upstream_requests"] = rq
            r["metrics_handshakes_per_10k"] = hs * 1e4 / max(rq, 1)
    return r


def summarize(rounds):
    """Mean over rounds; CPU per request from the totals."""
    if not rounds:
        return {}
    out = {"rounds": len(rounds)}
    for k in ("rps", "p50_us", "p90_us", "p99_us", "p999_us"):
        out[k] = statistics.mean(r[k] for r in rounds)
    for k in ("foreign_cpu_cores", "upstream_cpu_cores", "loadgen_cpu_cores"):
        out[k] = statistics.mean(r[k] for r in rounds)
    out["rps_min"] = min(r["rps"] for r in rounds)
    out["rps_max"] = max(r["rps"] for r in rounds)
    out["requests"] = sum(r["requests"] for r in rounds)
    out["errors"] = sum(r["errors"] for r in rounds)
    if "cpu_s" in rounds[0]:
        out["cpu_us_per_req"] = sum(r["cpu_s"] for r in rounds) * 1e6 / max(out["requests"], 1)
        out["peak_rss_kib"] = max(r["peak_rss_kib"] for r in rounds)
        out["upstream_conns"] = max(r["upstream_conns"] for r in rounds)
        out["upstream_new_conns"] = sum(r["upstream_new_conns"] for r in rounds)
        out["upstream_new_conns_per_10k"] = out["upstream_new_conns"] * 1e4 / max(out["requests"] - out["errors"], 1)
        if "metrics_handshakes" in rounds[0]:
            hs = sum(r["metrics_handshakes"] for r in rounds)
            rq = sum(r["metrics_upstream_requests"] for r in rounds)
            out["metrics_handshakes"] = hs
            out["metrics_handshakes_per_10k"] = hs * 1e4 / max(rq, 1)
    return out


# ---------------------------------------------------------------- new inbound mTLS connections

def _conn_worker(port, secs, certs, q):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(certs, "fleet-ca.crt"))
    ctx.load_cert_chain(os.path.join(certs, "backend.crt"), os.path.join(certs, "backend.key"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    req = (f"GET {TOKEN_PATH} HTTP/1.1\r\nHost: localhost\r\nx-server-key: k\r\nConnection: close\r\n\r\n").encode()
    ok = fail = 0
    lat = []
    first_error = None
    end = time.time() + secs
    while time.time() < end:
        t = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    s.sendall(req)
                    data = b""
                    while True:
                        try:
                            chunk = s.recv(65536)
                        except (ssl.SSLError, ConnectionResetError):
                            break
                        if not chunk:
                            break
                        data += chunk
                        if b"\r\n\r\n" in data:
                            head, _, body = data.partition(b"\r\n\r\n")
                            m = re.search(rb"content-length:\s*(\d+)", head, re.I)
                            if m and len(body) >= int(m.group(1)):
                                break
            if data.startswith(b"HTTP/1.1 200"):
                ok += 1
                lat.append(time.perf_counter() - t)
            else:
                fail += 1
                first_error = first_error or data[:80].decode(errors="replace")
        except Exception as e:  # noqa: BLE001 - any failure counts
            fail += 1
            first_error = first_error or repr(e)[:200]
    q.put((ok, fail, lat, first_error))


def conn_rate(pid_of, port, secs, procs):
    """New mTLS connections per second, each carrying one token GET, from `procs` clients."""
    q = mp.Queue()
    pids = tree(pid_of)
    t0 = cpu_ticks(pids)
    started = time.time()
    certs = os.path.join(common.WORK, "certs")
    workers = [mp.Process(target=_conn_worker, args=(port, secs, certs, q)) for _ in range(procs)]
    for w in workers:
        w.start()
    res = [q.get() for _ in workers]
    for w in workers:
        w.join()
    elapsed = time.time() - started
    t1 = cpu_ticks(tree(pid_of))
    ok = sum(r[0] for r in res)
    fail = sum(r[1] for r in res)
    lat = sorted(x for r in res for x in r[2])
    errs = [r[3] for r in res if r[3]]
    return dict(conns_per_s=ok / elapsed, ok=ok, failed=fail, secs=elapsed,
                cpu_us_per_conn=(t1 - t0) / HZ * 1e6 / max(ok, 1),
                p50_ms=lat[len(lat) // 2] * 1000 if lat else None,
                p99_ms=lat[int(len(lat) * 0.99)] * 1000 if lat else None,
                first_error=errs[0] if errs else None)


def one_mtls_request(port):
    r = mp.Queue()
    p = mp.Process(target=_conn_worker, args=(port, 0.001, os.path.join(common.WORK, "certs"), r))
    p.start()
    ok, fail, _, err = r.get()
    p.join()
    return ok > 0, err


# ---------------------------------------------------------------- idle connections

def idle_client(port, n):
    """The idle-connection client in a process of its own (this file as a script); returns the Popen."""
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--idle-client", str(port), str(n)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


async def _idle_client(port, n, batch):
    conns, ok, fail = [], 0, 0
    req = f"GET {TOKEN_PATH} HTTP/1.1\r\nHost: localhost\r\nx-server-key: k\r\n\r\n".encode()

    async def one():
        nonlocal ok, fail
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            w.write(req)
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            m = re.search(rb"content-length:\s*(\d+)", head, re.I)
            if m:
                await asyncio.wait_for(r.readexactly(int(m.group(1))), 10)
            if head.startswith(b"HTTP/1.1 200"):
                ok += 1
            else:
                fail += 1
            conns.append(w)
        except Exception:
            fail += 1

    for i in range(0, n, batch):
        await asyncio.gather(*(one() for _ in range(min(batch, n - i))))
    print(f"READY {ok} {fail}", flush=True)
    # hold until the parent says so (stdin closes)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for w in conns:
        w.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--idle-client":
        asyncio.run(_idle_client(int(sys.argv[2]), int(sys.argv[3]), 500))
    else:
        sys.exit(__doc__)
