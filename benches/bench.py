#!/usr/bin/env python3
"""Side-by-side benchmark of amity-mtls-proxy, nginx and HAProxy as an mTLS egress proxy.

Run it through benches/compare.sh (installs nginx, haproxy, wrk; builds the proxy).
Everything listens on 127.0.0.1 only; every process started here is stopped on exit.

What runs:
  upstream   nginx demanding client certificates (ssl_verify_client on), h2 + http/1.1
             by ALPN, returning a small JSON token; plus a plain-HTTP port (direct baseline)
  proxies    ours (release build), nginx (proxy_pass https, keepalive), HAProxy
             (server ... ssl crt ... verify required alpn h2,http/1.1, http-reuse always),
             each with one worker and with all cores
  load       wrk, keep-alive, 32 and 256 connections, GET /api/v3/authentication/token?userId=u1,
             rounds alternating between the proxies
  extra      new inbound mTLS connections per second, RSS with 10,000 idle inbound connections,
             start-to-ready time, failed requests during 20 reloads under load
"""

import argparse
import asyncio
import datetime
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

TOKEN_PATH = "/api/v3/authentication/token?userId=u1"
TOKEN_BODY = (
    '{"accessToken":"eyJhbGciOiJIUzI1NiJ9.eyJ1c2VySWQiOiJ1MSIsInR5cCI6ImFjY2VzcyJ9.c2lnbmF0dXJlLWJlbmNo",'
    '"refreshToken":"3f1c0a9e8b7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a4","users":[{"userId":"u1",'
    '"displayName":"u1"}],"userStatus":"active"}'
)
P = dict(
    up_tls=18443, up_plain=18081,
    ours=18080, ours_admin=19901, ours_tls=18480, ours_tls_admin=19902,
    ours_info=18090, ours_info_admin=19911,
    nginx=28080, nginx_tls=28480,
    haproxy=29080, haproxy_tls=29480,
)
HZ = os.sysconf("SC_CLK_TCK")
STARTED = []  # Popen objects, each the leader of its own process group
WORK = None
ARGS = None
UPSTREAM = None


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ---------------------------------------------------------------- processes

def spawn(argv, name, env=None, stdout=None):
    out = stdout or open(os.path.join(WORK, f"{name}.log"), "ab")
    e = dict(os.environ)
    e.update(env or {})
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=e,
                         start_new_session=True, cwd=WORK)
    p.bench_name = name
    STARTED.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=10):
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    # workers left behind by a reload (nginx, haproxy) are in the same group
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if p in STARTED:
        STARTED.remove(p)


def stop_all():
    for p in list(STARTED):
        try:
            stop(p, timeout=5)
        except Exception:
            pass


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid):
    """pid and all its descendants."""
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        x = todo.pop()
        out.append(x)
        todo.extend(kids.get(x, []))
    return out


def cpu_split(pids):
    """User and system CPU ticks summed over the processes."""
    u = k = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2:].split()
        u, k = u + int(fields[11]), k + int(fields[12])  # utime, stime (fields 14, 15)
    return u, k


def cpu_ticks(pids):
    return sum(cpu_split(pids))


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pids):
    return sum(status_kib(p, "VmRSS") for p in pids)


def pss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def socket_inodes(pids):
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    l = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if l.startswith("socket:["):
                    inodes.add(l[8:-1])
        except OSError:
            pass
    return inodes


def established(pids, local_port=None, remote_port=None):
    """Established TCP connections owned by pids, by local or remote port."""
    inodes = socket_inodes(pids)
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    c = line.split()
                    if c[3] != "01" or c[9] not in inodes:
                        continue
                    lp = int(c[1].rsplit(":", 1)[1], 16)
                    rp = int(c[2].rsplit(":", 1)[1], 16)
                    if (local_port is None or lp == local_port) and (remote_port is None or rp == remote_port):
                        n += 1
        except OSError:
            pass
    return n


def http_get(url, timeout=2.0, method="GET", headers=None):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except Exception:
        return None, b""


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def port_free(port):
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def token_ok(port, timeout=2.0):
    st, _ = http_get(f"http://127.0.0.1:{port}{TOKEN_PATH}", timeout, headers={"x-server-key": "k"})
    return st == 200


# ---------------------------------------------------------------- certificates

def sh(cmd, cwd=None):
    r = subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd}: {r.stderr.strip()}")
    return r.stdout


def make_certs(d):
    os.makedirs(d, exist_ok=True)
    ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
    ca_ext = "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
    for ca, cn in (("ca", "bench upstream CA (stands in for Amity's)"), ("fleet-ca", "bench fleet CA")):
        sh(f'openssl req -x509 {ec} -keyout {ca}.key -out {ca}.crt -days 365 -subj "/CN={cn}" {ca_ext}', d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    for name, ca, ext, cn in (("upstream", "ca", "server", "localhost"),
                              ("client", "ca", "client", "bench"),
                              ("gateway", "fleet-ca", "server", "localhost"),
                              ("backend", "fleet-ca", "client", "backend-1")):
        sh(f'openssl req {ec} -keyout {name}.key -out {name}.csr -subj "/CN={cn}"', d)
        sh(f"openssl x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial "
           f"-out {name}.crt -days 365 -extfile {ext}.ext", d)
        with open(os.path.join(d, f"{name}.pem"), "w") as f:
            f.write(open(os.path.join(d, f"{name}.crt")).read() + open(os.path.join(d, f"{name}.key")).read())


# ---------------------------------------------------------------- configs

def nginx_prefix_dirs(name):
    pre = os.path.join(WORK, name)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(pre, sub), exist_ok=True)
    return pre


def nginx_common(pre):
    return (f"client_body_temp_path {pre}/client_body; proxy_temp_path {pre}/proxy; "
            f"fastcgi_temp_path {pre}/fastcgi; uwsgi_temp_path {pre}/uwsgi; scgi_temp_path {pre}/scgi;")


def upstream_conf(h2=True):
    pre = nginx_prefix_dirs("upstream")
    c = os.path.join(WORK, "certs")
    body = TOKEN_BODY.replace("'", "\\'")
    loc = f"""
    location = /api/v3/authentication/token {{ default_type application/json; return 200 '{body}'; }}
    location / {{ return 404; }}"""
    return f"""
worker_processes auto;
pid {pre}/nginx.pid;
error_log {pre}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  {nginx_common(pre)}
  keepalive_requests 1000000000;
  keepalive_timeout 600s;
  server {{
    listen 127.0.0.1:{P['up_tls']} ssl{" http2" if h2 else ""} backlog=4096;
    ssl_certificate {c}/upstream.crt;
    ssl_certificate_key {c}/upstream.key;
    ssl_client_certificate {c}/ca.crt;
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    {loc}
  }}
  server {{
    listen 127.0.0.1:{P['up_plain']} backlog=4096;
    location = /stub_status {{ stub_status; }}
    {loc}
  }}
}}
"""


def nginx_proxy_conf(workers):
    pre = nginx_prefix_dirs("nginx")
    c = os.path.join(WORK, "certs")
    loc = f"""
    location = /api/v3/authentication/token {{
      if ($arg_userId = "") {{ return 400; }}
      proxy_pass https://amity;
    }}
    location / {{ return 403; }}"""
    return f"""
worker_processes {workers};
worker_rlimit_nofile 20000;
pid {pre}/nginx.pid;
error_log {pre}/error.log warn;
events {{ worker_connections 16000; }}
http {{
  access_log off;
  {nginx_common(pre)}
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  upstream amity {{
    server 127.0.0.1:{P['up_tls']};
    keepalive 512;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
  }}
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host localhost;
  proxy_ssl_certificate {c}/client.crt;
  proxy_ssl_certificate_key {c}/client.key;
  proxy_ssl_trusted_certificate {c}/ca.crt;
  proxy_ssl_verify on;
  proxy_ssl_name localhost;
  proxy_ssl_server_name on;
  proxy_ssl_protocols TLSv1.2 TLSv1.3;
  proxy_ssl_session_reuse on;
  server {{
    listen 127.0.0.1:{P['nginx']} backlog=4096;
    {loc}
  }}
  server {{
    listen 127.0.0.1:{P['nginx_tls']} ssl backlog=4096;
    ssl_certificate {c}/gateway.crt;
    ssl_certificate_key {c}/gateway.key;
    ssl_client_certificate {c}/fleet-ca.crt;
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets off;
    {loc}
  }}
}}
"""


def haproxy_conf(threads):
    c = os.path.join(WORK, "certs")
    return f"""
global
  nbthread {threads}
  maxconn 12000
  no strict-limits
  pidfile {WORK}/haproxy.pid
  stats socket {WORK}/haproxy.sock mode 600 level admin expose-fd listeners
  ssl-server-verify required
  tune.ssl.default-dh-param 2048

defaults
  mode http
  timeout connect 3s
  timeout client 300s
  timeout server 15s
  timeout http-request 10s
  timeout http-keep-alive 300s
  option http-keep-alive

frontend fe
  bind 127.0.0.1:{P['haproxy']} backlog 4096
  bind 127.0.0.1:{P['haproxy_tls']} ssl crt {c}/gateway.pem ca-file {c}/fleet-ca.crt verify required ssl-min-ver TLSv1.2 no-tls-tickets backlog 4096
  http-request deny deny_status 403 unless {{ path /api/v3/authentication/token }} METH_GET
  http-request deny deny_status 400 unless {{ url_param(userId),length gt 0 }}
  default_backend amity

backend amity
  http-reuse always
  http-request set-header Host localhost
  server up 127.0.0.1:{P['up_tls']} ssl crt {c}/client.pem ca-file {c}/ca.crt verify required verifyhost localhost sni str(localhost) alpn h2,http/1.1 ssl-min-ver TLSv1.2
"""


def ours_conf(listen, admin, inbound_tls=False, workers=0):
    c = os.path.join(WORK, "certs")
    s = f"""listen: 127.0.0.1:{listen}
admin_listen: 127.0.0.1:{admin}
workers: {workers}
upstream:
  url: https://127.0.0.1:{P['up_tls']}
  ca: {c}/ca.crt
client_certs:
  - name: bench
    cert: {c}/client.crt
    key: {c}/client.key
"""
    if inbound_tls:
        s += f"""inbound_tls:
  cert: {c}/gateway.crt
  key: {c}/gateway.key
  client_ca: {c}/fleet-ca.crt
"""
    return s


def write(name, text):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write(text)
    return path


# ---------------------------------------------------------------- the proxies

class Proxy:
    """One proxy under test: start, pids, reload, stop."""

    def __init__(self, kind, label, port, workers, info_log=False):
        self.kind, self.label, self.port, self.workers = kind, label, port, workers
        self.info_log = info_log
        self.p = None

    def start(self):
        if self.kind == "ours":
            admin = P["ours_info_admin"] if self.info_log else P["ours_admin"]
            cfg = write(f"ours-{self.port}.yaml", ours_conf(self.port, admin, workers=self.workers))
            self.admin = admin
            env = {"RUST_LOG": "info" if self.info_log else "warn"}
            env.update(ours_env())
            self.p = spawn([ARGS.bin, "run", "-c", cfg], f"ours-{self.port}", env=env)
        elif self.kind == "nginx":
            cfg = write("nginx.conf", nginx_proxy_conf(self.workers))
            self.p = spawn([ARGS.nginx, "-p", os.path.join(WORK, "nginx"), "-e",
                            os.path.join(WORK, "nginx", "error.log"), "-c", cfg, "-g", "daemon off;"], "nginx")
        elif self.kind == "haproxy":
            cfg = write("haproxy.cfg", haproxy_conf(self.workers))
            self.p = spawn([ARGS.haproxy, "-W", "-db", "-f", cfg], "haproxy")
        return self

    def ready(self, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.label} exited (see {WORK}/*.log)")
            if token_ok(self.port, 1.0):
                return True
            time.sleep(0.02)
        raise RuntimeError(f"{self.label} did not answer 200 within {timeout}s")

    def pids(self):
        return tree(self.p.pid)

    def reload(self):
        os.kill(self.p.pid, signal.SIGUSR2 if self.kind == "haproxy" else signal.SIGHUP)

    def metrics(self):
        if self.kind != "ours":
            return {}
        st, body = http_get(f"http://127.0.0.1:{self.admin}/metrics")
        out = {}
        for line in body.decode(errors="replace").splitlines():
            if line.startswith("#") or " " not in line:
                continue
            k, v = line.rsplit(" ", 1)
            try:
                out[k] = float(v)
            except ValueError:
                pass
        return out

    def stop(self):
        if self.p:
            stop(self.p)
            self.p = None


def ours_env():
    """Extra environment for our proxy (experiments such as LD_PRELOAD of another allocator)."""
    return dict(kv.split("=", 1) for kv in (ARGS.ours_env or []))


def mval(m, prefix):
    return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))


def upstream_accepts():
    st, body = http_get(f"http://127.0.0.1:{P['up_plain']}/stub_status")
    m = re.search(r"\n\s*(\d+)\s+(\d+)\s+(\d+)", body.decode())
    return int(m.group(1)) if m else 0


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
    lua = os.path.join(WORK, "bench.lua")
    if not os.path.exists(lua):
        write("bench.lua", WRK_LUA)
    cmd = [ARGS.wrk, f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--timeout", "5s", "-s", lua,
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


def busy_ticks():
    """Machine-wide non-idle CPU ticks (all cores) from /proc/stat."""
    with open("/proc/stat") as f:
        c = [int(x) for x in f.readline().split()[1:]]
    return sum(c) - c[3] - c[4]  # minus idle and iowait


def own_ticks():
    """CPU ticks of this script and of the children it has waited for (wrk)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime) * HZ


def measured_round(px, conns, secs):
    """One wrk round against a proxy, with its CPU, peak RSS and upstream connection figures."""
    pids = px.pids() if px else []
    us0, sy0 = cpu_split(pids)
    t0 = us0 + sy0
    b0, o0, u0, w0 = busy_ticks(), own_ticks(), cpu_ticks(tree(UPSTREAM.pid)), time.time()
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
    b1, o1, u1, w1 = busy_ticks(), own_ticks(), cpu_ticks(tree(UPSTREAM.pid)), time.time()
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


# ---------------------------------------------------------------- throughput

def throughput(results):
    modes = [m for m in [("1 worker", 1), ("all cores", os.cpu_count())] if m[0] in ARGS.modes]
    for mode, workers in modes:
        log(f"== throughput, {mode} ==")
        pxs = [Proxy(kind, kind, P[kind], workers) for kind in ARGS.proxies]
        if not ARGS.no_info and "ours" in ARGS.proxies:
            pxs.append(Proxy("ours", "ours (log info)", P["ours_info"], workers, info_log=True))
        try:
            for px in pxs:
                px.start()
            for px in pxs:
                px.ready()
            log("warm-up")
            for px in pxs:
                wrk(px.port, max(ARGS.conns), ARGS.warmup)
                wrk(px.port, min(ARGS.conns), 1)
            raw = {}
            for rnd in range(ARGS.rounds):
                for conns in ARGS.conns:
                    order = pxs[rnd % len(pxs):] + pxs[:rnd % len(pxs)]
                    if workers > 1 and not ARGS.no_direct:
                        order = order + [None]
                    for px in order:
                        label = px.label if px else "direct (no proxy)"
                        r = measured_round(px, conns, ARGS.secs)
                        raw.setdefault(f"{label}|{conns}", []).append(r)
                        extra = f" cpu/req {r['cpu_us_per_req']:.1f}us (sys {r['sys_us_per_req']:.1f})" if px else ""
                        log(f"round {rnd + 1} c={conns:<3} {label:<18} {r['rps']:>9.0f} req/s  p99 {r['p99_us'] / 1000:.2f} ms"
                            f"  errors {r['errors']}{extra}  other load {r['foreign_cpu_cores']:.2f} cores")
            for key, rounds in raw.items():
                label, conns = key.split("|")
                results["throughput"].append(dict(mode=mode, workers=workers, proxy=label, conns=int(conns),
                                                  **summarize(rounds), raw=rounds))
        finally:
            for px in pxs:
                px.stop()


# ---------------------------------------------------------------- inbound mTLS connection rate

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
    workers = [mp.Process(target=_conn_worker, args=(port, secs, os.path.join(WORK, "certs"), q)) for _ in range(procs)]
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
    p = mp.Process(target=_conn_worker, args=(port, 0.001, os.path.join(WORK, "certs"), r))
    p.start()
    ok, fail, _, err = r.get()
    p.join()
    return ok > 0, err


def inbound_mtls(results):
    log("== new inbound mTLS connections per second ==")
    out = results["inbound_mtls"]
    workers = os.cpu_count()
    # ours: only if this build knows inbound_tls
    cfg = write("ours-tls.yaml", ours_conf(P["ours_tls"], P["ours_tls_admin"], inbound_tls=True))
    chk = subprocess.run([ARGS.bin, "check", "-c", cfg], capture_output=True, text=True, cwd=WORK)
    targets = []
    if chk.returncode != 0:
        reason = (chk.stderr or chk.stdout).strip().splitlines()
        reason = next((l for l in reason if "inbound_tls" in l), reason[0] if reason else "check failed")
        out["ours"] = {"na": "n/a (not supported by this build)", "detail": reason.strip()[:200]}
        log(f"ours: n/a ({reason.strip()[:120]})")
    else:
        targets.append(("ours", "ours"))
    targets += [("nginx", "nginx"), ("haproxy", "haproxy")]
    for kind, label in targets:
        if kind == "ours":
            px = Proxy("ours", "ours", P["ours_tls"], workers)
            px.p = spawn([ARGS.bin, "run", "-c", cfg], "ours-tls", env={"RUST_LOG": "warn", **ours_env()})
            px.admin = P["ours_tls_admin"]
            port = P["ours_tls"]
        elif kind == "nginx":
            px = Proxy("nginx", "nginx", P["nginx"], workers).start()
            port = P["nginx_tls"]
        else:
            px = Proxy("haproxy", "haproxy", P["haproxy"], workers).start()
            port = P["haproxy_tls"]
        try:
            if not wait_port(port, 15):
                out[label] = {"na": "n/a (listener did not come up)"}
                continue
            ok, err = False, None
            for _ in range(50):
                ok, err = one_mtls_request(port)
                if ok:
                    break
                time.sleep(0.1)
            if not ok:
                out[label] = {"na": "n/a (not supported by this build)" if kind == "ours" else "n/a (failed)",
                              "detail": f"no mTLS 200 on the listener: {err}"}
                log(f"{label}: {out[label]}")
                continue
            r = conn_rate(px.p.pid, port, ARGS.conn_secs, ARGS.conn_procs)
            out[label] = r
            log(f"{label:<8} {r['conns_per_s']:8.0f} conn/s  cpu/conn {r['cpu_us_per_conn']:.0f}us  failed {r['failed']}")
        finally:
            px.stop()


# ---------------------------------------------------------------- idle connections

async def _idle_client(port, n, batch, hold_file):
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


def idle(results):
    log(f"== RSS with {ARGS.idle} idle inbound connections (one request each, then idle keep-alive) ==")
    workers = os.cpu_count()
    for kind in ("ours", "nginx", "haproxy"):
        px = Proxy(kind, kind, P[kind], workers).start()
        try:
            px.ready()
            wrk(px.port, 32, 2)
            time.sleep(0.5)
            base_rss, base_pss = rss_kib(px.pids()), pss_kib(px.pids())
            cl = subprocess.Popen([sys.executable, __file__, "--idle-client", str(px.port), str(ARGS.idle)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            line = cl.stdout.readline().split()
            opened = int(line[1]) if len(line) > 1 else 0
            failed = int(line[2]) if len(line) > 2 else ARGS.idle
            time.sleep(1.0)
            pids = px.pids()
            rss, pss = rss_kib(pids), pss_kib(pids)
            est = established(pids, local_port=px.port)
            cl.stdin.close()
            cl.wait(30)
            r = dict(rss_kib=rss, pss_kib=pss, base_rss_kib=base_rss, base_pss_kib=base_pss,
                     kib_per_conn=(rss - base_rss) / max(est, 1), opened=opened, failed=failed,
                     established_at_measure=est, processes=len(pids))
            results["idle"][kind] = r
            log(f"{kind:<8} RSS {rss / 1024:7.1f} MiB (idle before: {base_rss / 1024:.1f} MiB, PSS {pss / 1024:.1f} MiB)"
                f"  open {est}/{ARGS.idle}  failed {failed}")
        finally:
            px.stop()


# ---------------------------------------------------------------- start to ready

def startup(results):
    log("== time from start to ready ==")
    out = results["startup"]
    for kind in ("ours", "nginx", "haproxy"):
        times, first_ok = [], []
        for _ in range(ARGS.start_reps):
            px = Proxy(kind, kind, P[kind], os.cpu_count())
            t0 = time.perf_counter()
            px.start()
            t_ready = None
            end = time.time() + 20
            if kind == "ours":
                while time.time() < end:
                    st, _ = http_get(f"http://127.0.0.1:{P['ours_admin']}/readyz", 0.5)
                    if st == 200:
                        t_ready = time.perf_counter() - t0
                        break
                    time.sleep(0.002)
            while time.time() < end:
                if token_ok(px.port, 0.5):
                    first_ok.append(time.perf_counter() - t0)
                    break
                time.sleep(0.002)
            if t_ready is not None:
                times.append(t_ready)
            px.stop()
            time.sleep(0.2)
        out[kind] = dict(readyz_ms=statistics.median(times) * 1000 if times else None,
                         first_200_ms=statistics.median(first_ok) * 1000 if first_ok else None,
                         reps=ARGS.start_reps)
        log(f"{kind:<8} readyz {out[kind]['readyz_ms'] or float('nan'):7.1f} ms   first proxied 200 "
            f"{out[kind]['first_200_ms'] or float('nan'):7.1f} ms")


# ---------------------------------------------------------------- reloads under load

def reloads(results):
    log(f"== {ARGS.reloads} reloads under load (wrk -c32) ==")
    for kind in ("ours", "nginx", "haproxy"):
        px = Proxy(kind, kind, P[kind], os.cpu_count()).start()
        try:
            px.ready()
            wrk(px.port, 32, 2)
            m0 = px.metrics()
            a0 = upstream_accepts()
            secs = int(ARGS.reloads * ARGS.reload_every + 3)
            res = {}
            th = threading.Thread(target=lambda: res.update(wrk(px.port, 32, secs)))
            th.start()
            time.sleep(1)
            for _ in range(ARGS.reloads):
                px.reload()
                time.sleep(ARGS.reload_every)
            th.join()
            m1 = px.metrics()
            a1 = upstream_accepts()
            r = dict(requests=res["requests"], failed=res["errors"],
                     breakdown={k: res[k] for k in ("connect", "read", "write", "status", "timeout")},
                     rps=res["rps"], p99_us=res["p99_us"], reloads=ARGS.reloads,
                     upstream_new_conns=max(a1 - a0 - 1, 0))
            if kind == "ours":
                r["reloads_ok"] = mval(m1, 'amity_proxy_reloads_total{result="ok"}') - mval(m0, 'amity_proxy_reloads_total{result="ok"}')
            results["reloads"][kind] = r
            log(f"{kind:<8} failed {r['failed']} of {r['requests']} ({r['breakdown']})")
        finally:
            px.stop()


# ---------------------------------------------------------------- report

def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.strip()
    def ver(cmd):
        r = subprocess.run(cmd, capture_output=True, text=True)
        return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "?"
    osr = "?"
    try:
        osr = next(l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release") if l.startswith("PRETTY_NAME="))
    except (OSError, StopIteration):
        pass
    if os.environ.get("AMITY_BIN_LABEL"):
        commit, dirty = os.environ["AMITY_BIN_LABEL"], ""
    else:
        commit = None
    commit = commit or subprocess.run(["git", "-C", ARGS.root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    if not os.environ.get("AMITY_BIN_LABEL"):
        dirty = subprocess.run(["git", "-C", ARGS.root, "status", "--porcelain", "--", "src", "Cargo.toml"],
                               capture_output=True, text=True).stdout.strip()
    return dict(cpu=cpu, nproc=os.cpu_count(), free=mem, os=osr, kernel=platform.release(),
                nginx=ver([ARGS.nginx, "-v"]), haproxy=ver([ARGS.haproxy, "-v"]), wrk=ver([ARGS.wrk, "-v"]),
                openssl=ver(["openssl", "version"]), proxy_bin=ARGS.bin,
                proxy_commit=commit + (" (src/ has uncommitted changes)" if dirty else ""),
                date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))


def fnum(x, nd=0):
    if x is None:
        return "n/a"
    return f"{x:,.{nd}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fr(x):
    return "n/a" if x is None else f"{x:.2f}"


def report(results):
    L = []
    m = results["machine"]
    L.append("# amity-mtls-proxy vs nginx vs HAProxy: mTLS egress proxy, side by side\n")
    L.append(f"Run {m['date']} with `bash benches/compare.sh {' '.join(results['argv'])}`".rstrip() + ".\n")
    L.append(f"- Machine: {m['cpu']}, {m['nproc']} cores (nproc), {m['os']}, kernel {m['kernel']}")
    L.append(f"- Memory (free -h):\n\n```\n{m['free']}\n```\n")
    L.append(f"- Proxy: `{m['proxy_bin']}` built from {m['proxy_commit']}; {m['nginx']}; {m['haproxy']}; "
             f"{m['wrk']}; {m['openssl']}")
    a = results["args"]
    L.append(f"- Load: wrk -t1, keep-alive, GET {TOKEN_PATH} with `x-server-key: k`; {a['rounds']} rounds of "
             f"{a['secs']} s per proxy and connection count, alternating; the load generator, the upstream nginx "
             "(2 workers) and the proxy share the same cores. Certificates: ECDSA P-256, TLS 1.3."
             + (f" Everything the benchmark started ran at nice {a['nice']}." if a.get("nice") else "") + "\n")

    for mode in ("1 worker", "all cores"):
        rows = [r for r in results["throughput"] if r["mode"] == mode]
        if not rows:
            continue
        L.append(f"## Keep-alive throughput, {mode}\n")
        L.append("| conns | proxy | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS MiB | upstream conns | new upstream conns /10k req | errors | req/s ÷ nginx | p99 ÷ nginx | CPU ÷ nginx | other load, cores |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for conns in sorted({r["conns"] for r in rows}):
            cr = [r for r in rows if r["conns"] == conns]
            ng = next((r for r in cr if r["proxy"] == "nginx"), None)
            for r in cr:
                isp = "cpu_us_per_req" in r
                L.append("| " + " | ".join([
                    str(conns), r["proxy"], fnum(r["rps"]), fnum(r["p50_us"] / 1000, 2), fnum(r["p99_us"] / 1000, 2),
                    fnum(r.get("cpu_us_per_req"), 1) if isp else "–",
                    fnum(r.get("peak_rss_kib", 0) / 1024, 1) if isp else "–",
                    str(r.get("upstream_conns", "–")),
                    fnum(r.get("upstream_new_conns_per_10k"), 2) if isp else "–",
                    str(r["errors"]),
                    fr(ratio(r["rps"], ng and ng["rps"])),
                    fr(ratio(r["p99_us"], ng and ng["p99_us"])),
                    fr(ratio(r.get("cpu_us_per_req"), ng and ng.get("cpu_us_per_req"))) if isp else "–",
                    f"{r.get('foreign_cpu_cores', 0):.2f}",
                ]) + " |")
        L.append("")

    im = results["inbound_mtls"]
    if im:
        L.append("## New inbound mTLS connections per second (all cores)\n")
        L.append(f"Each connection: full TLS 1.3 handshake with a client certificate from the fleet CA, one token GET, "
                 f"close; {a['conn_procs']} client processes for {a['conn_secs']} s.\n")
        L.append("| proxy | conn/s | proxy CPU µs/conn | p50 ms | p99 ms | failed | conn/s ÷ nginx |")
        L.append("|---|---|---|---|---|---|---|")
        ng = im.get("nginx", {})
        for k in ("ours", "nginx", "haproxy"):
            r = im.get(k)
            if not r:
                continue
            if "na" in r:
                L.append(f"| {k} | {r['na']} | | | | | |")
                continue
            L.append(f"| {k} | {fnum(r['conns_per_s'])} | {fnum(r['cpu_us_per_conn'])} | {fnum(r['p50_ms'], 2)} | "
                     f"{fnum(r['p99_ms'], 2)} | {r['failed']} | {fr(ratio(r['conns_per_s'], ng.get('conns_per_s')))} |")
        L.append("")

    idl = results["idle"]
    if idl:
        L.append(f"## Memory with {a['idle']} idle inbound connections (all cores)\n")
        L.append("Each connection made one token GET, then stays open idle (keep-alive). RSS summed over all the "
                 "proxy's processes (PSS beside it, which does not double-count pages shared by nginx/HAProxy workers).\n")
        L.append("| proxy | RSS MiB | PSS MiB | RSS before MiB | KiB per connection | open at measure | RSS ÷ nginx |")
        L.append("|---|---|---|---|---|---|---|")
        ng = idl.get("nginx", {})
        for k in ("ours", "nginx", "haproxy"):
            r = idl.get(k)
            if r:
                L.append(f"| {k} | {fnum(r['rss_kib'] / 1024, 1)} | {fnum(r['pss_kib'] / 1024, 1)} | "
                         f"{fnum(r['base_rss_kib'] / 1024, 1)} | {fnum(r['kib_per_conn'], 1)} | "
                         f"{r['established_at_measure']} | {fr(ratio(r['rss_kib'], ng.get('rss_kib')))} |")
        L.append("")

    su = results["startup"]
    if su:
        L.append("## Start to ready (median of %d starts)\n" % a["start_reps"])
        L.append("| proxy | start → /readyz 200, ms | start → first proxied token 200, ms |")
        L.append("|---|---|---|")
        for k in ("ours", "nginx", "haproxy"):
            r = su.get(k)
            if r:
                L.append(f"| {k} | {fnum(r['readyz_ms'], 1)} | {fnum(r['first_200_ms'], 1)} |")
        L.append("")

    rl = results["reloads"]
    if rl:
        L.append(f"## Reloads under load ({a['reloads']} reloads, one every {a['reload_every']} s, wrk -c32)\n")
        L.append("| proxy | requests | failed | connect/read/write/status/timeout | new upstream conns |")
        L.append("|---|---|---|---|---|")
        for k in ("ours", "nginx", "haproxy"):
            r = rl.get(k)
            if r:
                b = r["breakdown"]
                L.append(f"| {k} | {r['requests']:,} | {r['failed']} | {b['connect']}/{b['read']}/{b['write']}/"
                         f"{b['status']}/{b['timeout']} | {r['upstream_new_conns']} |")
        L.append("")

    L.append("## Targets\n")
    L.append("| target | scope | ours | reference | met |")
    L.append("|---|---|---|---|---|")
    for t in results["targets"]:
        L.append(f"| {t['target']} | {t['scope']} | {t['ours']} | {t['ref']} | {t['met']} |")
    L.append("")
    return "\n".join(L)


def targets(results):
    T = []

    def row(mode, conns, proxy):
        return next((r for r in results["throughput"]
                     if r["mode"] == mode and r["conns"] == conns and r["proxy"] == proxy), None)

    def yn(b):
        return "n/a" if b is None else ("yes" if b else "**no**")

    for mode in ("1 worker", "all cores"):
        for conns in ARGS.conns:
            o, n, h = row(mode, conns, "ours"), row(mode, conns, "nginx"), row(mode, conns, "haproxy")
            if not (o and n and h):
                continue
            sc = f"{mode}, c={conns}"
            cr = ratio(o["cpu_us_per_req"], n["cpu_us_per_req"])
            T.append(dict(target="CPU/req ≤ 0.75 × nginx and ≤ HAProxy", scope=sc,
                          ours=f"{o['cpu_us_per_req']:.1f} µs ({cr:.2f} × nginx)",
                          ref=f"nginx {n['cpu_us_per_req']:.1f}, HAProxy {h['cpu_us_per_req']:.1f} µs",
                          met=yn(cr <= 0.75 and o["cpu_us_per_req"] <= h["cpu_us_per_req"])))
            if conns == 32:
                rr = ratio(o["rps"], n["rps"])
                T.append(dict(target="req/s at 32 conns ≥ 1.1 × nginx and ≥ HAProxy", scope=sc,
                              ours=f"{o['rps']:,.0f} ({rr:.2f} × nginx)",
                              ref=f"nginx {n['rps']:,.0f}, HAProxy {h['rps']:,.0f}",
                              met=yn(rr >= 1.1 and o["rps"] >= h["rps"])))
            pr = ratio(o["p99_us"], n["p99_us"])
            T.append(dict(target="p99 ≤ 1.0 × nginx", scope=sc, ours=f"{o['p99_us'] / 1000:.2f} ms ({pr:.2f})",
                          ref=f"nginx {n['p99_us'] / 1000:.2f} ms", met=yn(pr <= 1.0)))
            hs = o.get("metrics_handshakes_per_10k")
            T.append(dict(target="upstream handshakes /10k req ≤ 1 per pooled connection", scope=sc,
                          ours=f"{hs:.2f} /10k (metrics), {o['upstream_new_conns_per_10k']:.2f} (upstream count); "
                               f"{o['upstream_conns']} pooled",
                          ref=f"nginx {n['upstream_new_conns_per_10k']:.2f} ({n['upstream_conns']} pooled), "
                              f"HAProxy {h['upstream_new_conns_per_10k']:.2f} ({h['upstream_conns']} pooled)",
                          # pooled connections cannot usefully exceed the concurrency: a pool that churns
                          # (opens a connection per request and closes it) must not pass by inflating the count
                          met=yn(hs is not None and hs <= max(min(o["upstream_conns"], conns), 1))))
    idl = results["idle"]
    if "ours" in idl and "nginx" in idl:
        r = ratio(idl["ours"]["rss_kib"], idl["nginx"]["rss_kib"])
        T.append(dict(target=f"RSS with {ARGS.idle} idle conns ≤ 1.5 × nginx", scope="all cores",
                      ours=f"{idl['ours']['rss_kib'] / 1024:.1f} MiB ({r:.2f})",
                      ref=f"nginx {idl['nginx']['rss_kib'] / 1024:.1f} MiB", met=yn(r <= 1.5)))
    rl = results["reloads"]
    if "ours" in rl:
        T.append(dict(target=f"0 failed requests during {ARGS.reloads} reloads", scope="all cores, c=32",
                      ours=str(rl["ours"]["failed"]),
                      ref=f"nginx {rl.get('nginx', {}).get('failed', 'n/a')}, HAProxy {rl.get('haproxy', {}).get('failed', 'n/a')}",
                      met=yn(rl["ours"]["failed"] == 0)))
    im = results["inbound_mtls"]
    if im:
        o = im.get("ours", {})
        T.append(dict(target="inbound mTLS conn/s (reported, no target)", scope="all cores",
                      ours=o.get("na") or f"{o.get('conns_per_s', 0):,.0f}",
                      ref=f"nginx {im.get('nginx', {}).get('conns_per_s', 0):,.0f}, HAProxy {im.get('haproxy', {}).get('conns_per_s', 0):,.0f}",
                      met="–"))
    results["targets"] = T


def main():
    global WORK, ARGS, UPSTREAM
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--bin", default=os.environ.get("AMITY_BIN"))
    ap.add_argument("--quick", action="store_true", help="short rounds, for a smoke test")
    ap.add_argument("--secs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--conns", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--reloads", type=int, default=20)
    ap.add_argument("--reload-every", type=float, default=0.75)
    ap.add_argument("--conn-secs", type=int, default=10)
    ap.add_argument("--conn-procs", type=int, default=6)
    ap.add_argument("--start-reps", type=int, default=5)
    ap.add_argument("--proxies", nargs="+", choices=["ours", "nginx", "haproxy"], default=["ours", "nginx", "haproxy"],
                    help="throughput rounds for these only (a quick check of one build)")
    ap.add_argument("--modes", nargs="+", choices=["1 worker", "all cores"], default=["1 worker", "all cores"],
                    help="throughput with one worker, with all cores, or both")
    ap.add_argument("--no-info", action="store_true", help="skip the RUST_LOG=info rows")
    ap.add_argument("--no-direct", action="store_true", help="skip the direct-to-upstream baseline")
    ap.add_argument("--only", nargs="+", choices=["startup", "throughput", "inbound", "idle", "reloads"],
                    default=["startup", "throughput", "inbound", "idle", "reloads"])
    ap.add_argument("--nice", type=int, default=0,
                    help="niceness for everything the benchmark starts (e.g. -10 on a machine shared with other jobs)")
    ap.add_argument("--ours-env", nargs="*", metavar="K=V",
                    help="extra environment for our proxy, e.g. LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2")
    ap.add_argument("--upstream-h1", action="store_true",
                    help="the upstream offers only http/1.1 by ALPN (what-if: ours pooling HTTP/1.1 upstream)")
    ap.add_argument("--out", default=None, help="results folder (default benches/results)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs)")
    ap.add_argument("--rerender", metavar="JSON", help="only rebuild latest.md from a results JSON")
    ARGS = ap.parse_args()
    if ARGS.rerender:
        results = json.load(open(ARGS.rerender))
        for k, v in results["args"].items():
            if k not in ("rerender", "out", "root"):
                setattr(ARGS, k, v)
        targets(results)
        out_dir = ARGS.out or os.path.dirname(os.path.abspath(ARGS.rerender))
        md = report(results)
        with open(os.path.join(out_dir, "latest.md"), "w") as f:
            f.write(md + "\n")
        with open(os.path.join(out_dir, "latest.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
        print(md)
        return
    if ARGS.quick:
        ARGS.secs, ARGS.rounds, ARGS.warmup, ARGS.conn_secs, ARGS.start_reps = 4, 1, 1, 4, 2
    if ARGS.nice:
        os.nice(ARGS.nice)
    ARGS.bin = ARGS.bin or os.path.join(ARGS.root, "target/optimized/amity-mtls-proxy")
    ARGS.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    ARGS.haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    ARGS.wrk = shutil.which("wrk") or "/usr/bin/wrk"
    out_dir = ARGS.out or os.path.join(ARGS.root, "benches", "results")
    for tool in (ARGS.bin, ARGS.nginx, ARGS.haproxy, ARGS.wrk):
        if not os.path.exists(tool):
            sys.exit(f"missing: {tool}")
    try:
        lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
        if any(v >= lo for v in P.values()):
            log(f"warning: some bench ports are in the ephemeral range (from {lo}); a listener may fail to bind")
    except OSError:
        pass
    busy = [k for k, v in P.items() if not port_free(v)]
    if busy:
        sys.exit("ports in use: " + ", ".join(f"{k}={P[k]}" for k in busy))

    WORK = tempfile.mkdtemp(prefix="amity-bench-")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    argv = sys.argv[1:]
    if "--root" in argv:
        i = argv.index("--root")
        argv = argv[:i] + argv[i + 2:]
    results = dict(argv=argv, args={},
                   throughput=[], inbound_mtls={}, idle={}, startup={}, reloads={}, targets=[])
    up = None
    try:
        results["machine"] = machine()
        results["args"] = {k: v for k, v in vars(ARGS).items() if isinstance(v, (int, float, str, list, bool))}
        log(f"work folder {WORK}; proxy {ARGS.bin} ({results['machine']['proxy_commit']})")
        make_certs(os.path.join(WORK, "certs"))
        pre = nginx_prefix_dirs("upstream")
        up = spawn([ARGS.nginx, "-p", pre, "-e", os.path.join(pre, "error.log"),
                    "-c", write("upstream.conf", upstream_conf(not ARGS.upstream_h1)), "-g", "daemon off;"], "upstream")
        UPSTREAM = up
        if not (wait_port(P["up_tls"]) and wait_port(P["up_plain"])):
            raise RuntimeError("upstream nginx did not start")
        steps = dict(startup=startup, throughput=throughput, inbound=inbound_mtls, idle=idle, reloads=reloads)
        for name in ("startup", "throughput", "inbound", "idle", "reloads"):
            if name in ARGS.only:
                steps[name](results)
        targets(results)
        md = report(results)
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "latest.md"), "w") as f:
            f.write(md + "\n")
        with open(os.path.join(out_dir, "latest.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
        print()
        print(md)
        log(f"wrote {out_dir}/latest.md and latest.json")
    finally:
        stop_all()
        if not ARGS.keep:
            shutil.rmtree(WORK, ignore_errors=True)
        else:
            print(f"kept {WORK}")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--idle-client":
        asyncio.run(_idle_client(int(sys.argv[2]), int(sys.argv[3]), 500, None))
    else:
        mp.set_start_method("fork")
        main()
