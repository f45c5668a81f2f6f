"""What every part of the benchmark shares: the ports, the request, the run's state, small helpers.

The run's state is set once by the script that drives a run (bench.py, ab.py, profile_proxies.py):
  WORK      the work folder (configs, certificates, logs)
  ARGS      the options: paths of the binaries (bin, nginx, haproxy, wrk) and the run's settings
  UPSTREAM  the upstream nginx (a Popen), whose CPU each measured round also reads
"""

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

TOKEN_PATH = "/api/v3/authentication/token?userId=u1"
TOKEN_BODY = (
    '{"accessToken":"eyJhbGciOiJIUzI1NiJ9.eyJ1c2VySWQiOiJ1MSIsInR5cCI6ImFjY2VzcyJ9.c2lnbmF0dXJlLWJlbmNo",'
    '"refreshToken":"3f1c0a9e8b7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a4","users":[{"userId":"u1",'
    '"displayName":"u1"}],"userStatus":"active"}'
)
# Each proxy's keep-alive port is P[kind], so that a proxy's kind names its port.
P = {
    "up_tls": 18443, "up_plain": 18081,
    "ours": 18080, "ours_admin": 19901, "ours_tls": 18480, "ours_tls_admin": 19902,
    "ours_info": 18090, "ours_info_admin": 19911,
    "nginx": 28080, "nginx_tls": 28480,
    "haproxy": 29080, "haproxy_tls": 29480,
    "haproxy-lean": 29081,
}
HZ = os.sysconf("SC_CLK_TCK")

WORK = None
ARGS = None
UPSTREAM = None


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def write(name, text):
    """A file in the work folder; returns its path."""
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def sh(cmd, cwd=None):
    r = subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd}: {r.stderr.strip()}")
    return r.stdout


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
