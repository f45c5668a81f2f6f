"""The processes under test and the upstream they call: certificates, configurations, start, ready, stop.

upstream   nginx demanding client certificates (ssl_verify_client on), h2 + http/1.1 by ALPN,
           answering the token GET with a fixed JSON body; a plain-HTTP port with the same answer
           (the direct baseline) and stub_status (the upstream's accepted connections)
proxies    ours, nginx and HAProxy, each with the same client certificate and the same allow-list;
           and haproxy-lean, HAProxy at its leanest: a bare backend without the allow-list, one
           process without a master (what a proxy that only forwards costs)
"""

import os
import re
import signal
import time

import common
from common import P, TOKEN_BODY, http_get, token_ok, wait_port, write
from procs import spawn, stop, tree


# ---------------------------------------------------------------- certificates

def make_certs(d):
    os.makedirs(d, exist_ok=True)
    ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
    ca_ext = "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
    for ca, cn in (("ca", "bench upstream CA (stands in for Amity's)"), ("fleet-ca", "bench fleet CA")):
        common.sh(f'openssl req -x509 {ec} -keyout {ca}.key -out {ca}.crt -days 365 -subj "/CN={cn}" {ca_ext}', d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    for name, ca, ext, cn in (("upstream", "ca", "server", "localhost"),
                              ("client", "ca", "client", "bench"),
                              ("gateway", "fleet-ca", "server", "localhost"),
                              ("backend", "fleet-ca", "client", "backend-1")):
        common.sh(f'openssl req {ec} -keyout {name}.key -out {name}.csr -subj "/CN={cn}"', d)
        common.sh(f"openssl x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial "
                  f"-out {name}.crt -days 365 -extfile {ext}.ext", d)
        with open(os.path.join(d, f"{name}.pem"), "w") as f:
            f.write(open(os.path.join(d, f"{name}.crt")).read() + open(os.path.join(d, f"{name}.key")).read())


# ---------------------------------------------------------------- configurations

def nginx_prefix_dirs(name):
    pre = os.path.join(common.WORK, name)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(pre, sub), exist_ok=True)
    return pre


def nginx_common(pre):
    return (f"client_body_temp_path {pre}/client_body; proxy_temp_path {pre}/proxy; "
            f"fastcgi_temp_path {pre}/fastcgi; uwsgi_temp_path {pre}/uwsgi; scgi_temp_path {pre}/scgi;")


def upstream_conf(h2=True, workers="auto"):
    pre = nginx_prefix_dirs("upstream")
    c = os.path.join(common.WORK, "certs")
    body = TOKEN_BODY.replace("'", "\\'")
    loc = f"""
    location = /api/v3/authentication/token {{ default_type application/json; return 200 '{body}'; }}
    location / {{ return 404; }}"""
    return f"""
worker_processes {workers};
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
    c = os.path.join(common.WORK, "certs")
    loc = """
    location = /api/v3/authentication/token {
      if ($arg_userId = "") { return 400; }
      proxy_pass https://amity;
    }
    location / { return 403; }"""
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


# What both HAProxy peers share: timeouts and keep-alive, and the pooled, verified mTLS
# connection to the upstream.
HAPROXY_DEFAULTS = """defaults
  mode http
  timeout connect 3s
  timeout client 300s
  timeout server 15s
  timeout http-request 10s
  timeout http-keep-alive 300s
  option http-keep-alive
"""


def haproxy_upstream(c):
    return (f"  server up 127.0.0.1:{P['up_tls']} ssl crt {c}/client.pem ca-file {c}/ca.crt verify required "
            "verifyhost localhost sni str(localhost) alpn h2,http/1.1 ssl-min-ver TLSv1.2")


def haproxy_conf(threads):
    c = os.path.join(common.WORK, "certs")
    work = common.WORK
    return f"""
global
  nbthread {threads}
  maxconn 12000
  no strict-limits
  pidfile {work}/haproxy.pid
  stats socket {work}/haproxy.sock mode 600 level admin expose-fd listeners
  ssl-server-verify required
  tune.ssl.default-dh-param 2048

{HAPROXY_DEFAULTS}
frontend fe
  bind 127.0.0.1:{P['haproxy']} backlog 4096
  bind 127.0.0.1:{P['haproxy_tls']} ssl crt {c}/gateway.pem ca-file {c}/fleet-ca.crt verify required ssl-min-ver TLSv1.2 no-tls-tickets backlog 4096
  http-request deny deny_status 403 unless {{ path /api/v3/authentication/token }} METH_GET
  http-request deny deny_status 400 unless {{ url_param(userId),length gt 0 }}
  default_backend amity

backend amity
  http-reuse always
  http-request set-header Host localhost
{haproxy_upstream(c)}
"""


def haproxy_lean_conf(threads):
    """HAProxy at its leanest: no allow-list ACLs, no header rule, no master process, no stats socket;
    the same pooled, verified mTLS to the upstream."""
    c = os.path.join(common.WORK, "certs")
    return f"""
global
  nbthread {threads}
  maxconn 12000
  no strict-limits

{HAPROXY_DEFAULTS}
frontend fe
  bind 127.0.0.1:{P['haproxy-lean']} backlog 4096
  default_backend amity

backend amity
  http-reuse always
{haproxy_upstream(c)}
"""


def ours_conf(listen, admin, inbound_tls=False, workers=0):
    c = os.path.join(common.WORK, "certs")
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


def ours_env():
    """Extra environment for our proxy (experiments such as LD_PRELOAD of another allocator)."""
    return dict(kv.split("=", 1) for kv in (getattr(common.ARGS, "ours_env", None) or []))


# ---------------------------------------------------------------- the upstream

def start_upstream(h2=True, workers="auto"):
    """The upstream nginx, in common.UPSTREAM; raises if it does not listen."""
    pre = nginx_prefix_dirs("upstream")
    common.UPSTREAM = spawn([common.ARGS.nginx, "-p", pre, "-e", os.path.join(pre, "error.log"),
                             "-c", write("upstream.conf", upstream_conf(h2, workers)), "-g", "daemon off;"], "upstream")
    if not (wait_port(P["up_tls"]) and wait_port(P["up_plain"])):
        raise RuntimeError("upstream nginx did not start")
    return common.UPSTREAM


def upstream_accepts():
    """Connections the upstream has accepted since it started (stub_status)."""
    st, body = http_get(f"http://127.0.0.1:{P['up_plain']}/stub_status")
    m = re.search(r"\n\s*(\d+)\s+(\d+)\s+(\d+)", body.decode())
    return int(m.group(1)) if m else 0


# ---------------------------------------------------------------- the proxies

class Proxy:
    """One proxy under test: start, ready, pids, reload, metrics, stop."""

    def __init__(self, kind, label, port, workers, info_log=False):
        self.kind, self.label, self.port, self.workers = kind, label, port, workers
        self.info_log = info_log
        self.p = None

    def start(self):
        a, work = common.ARGS, common.WORK
        if self.kind == "ours":
            admin = P["ours_info_admin"] if self.info_log else P["ours_admin"]
            cfg = write(f"ours-{self.port}.yaml", ours_conf(self.port, admin, workers=self.workers))
            self.admin = admin
            env = {"RUST_LOG": "info" if self.info_log else "warn"}
            env.update(ours_env())
            self.p = spawn([a.bin, "run", "-c", cfg], f"ours-{self.port}", env=env)
        elif self.kind == "nginx":
            cfg = write("nginx.conf", nginx_proxy_conf(self.workers))
            self.p = spawn([a.nginx, "-p", os.path.join(work, "nginx"), "-e",
                            os.path.join(work, "nginx", "error.log"), "-c", cfg, "-g", "daemon off;"], "nginx")
        elif self.kind == "haproxy":
            cfg = write("haproxy.cfg", haproxy_conf(self.workers))
            self.p = spawn([a.haproxy, "-W", "-db", "-f", cfg], "haproxy")
        elif self.kind == "haproxy-lean":
            cfg = write("haproxy-lean.cfg", haproxy_lean_conf(self.workers))
            self.p = spawn([a.haproxy, "-db", "-f", cfg], "haproxy-lean")
        return self

    def run(self, argv, name, admin, env=None):
        """Ours from a command line of the caller's (another binary, another config)."""
        self.p = spawn(argv, name, env={"RUST_LOG": "warn", **(env or {})})
        self.admin = admin
        return self

    def ready(self, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.label} exited (see {common.WORK}/*.log)")
            if token_ok(self.port, 1.0):
                return True
            time.sleep(0.02)
        raise RuntimeError(f"{self.label} did not answer 200 within {timeout}s")

    def pids(self):
        return tree(self.p.pid)

    def reload(self):
        if self.kind == "haproxy-lean":
            raise RuntimeError("haproxy-lean runs without a master process: it cannot reload")
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


def mval(m, prefix):
    """A metric summed over its label sets."""
    return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))
