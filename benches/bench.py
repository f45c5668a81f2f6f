#!/usr/bin/env python3
"""Side-by-side benchmark of amity-mtls-proxy, nginx and HAProxy as an mTLS egress proxy.

Run it through benches/compare.sh (installs nginx, haproxy, wrk; builds the proxy).
Everything listens on 127.0.0.1 only; every process started here is stopped on exit.

What runs:
  upstream   nginx demanding client certificates (ssl_verify_client on), h2 + http/1.1
             by ALPN, returning a small JSON token; plus a plain-HTTP port (direct baseline)
  proxies    ours (release build), nginx (proxy_pass https, keepalive), HAProxy
             (server ... ssl crt ... verify required alpn h2,http/1.1, http-reuse always),
             each with one worker and with all cores; in the throughput rounds also
             haproxy-lean, HAProxy without the allow-list and without a master process
  load       wrk, keep-alive, 32 and 256 connections, GET /api/v3/authentication/token?userId=u1,
             rounds alternating between the proxies
  extra      new inbound mTLS connections per second, RSS with 10,000 idle inbound connections,
             start-to-ready time, failed requests during 20 reloads under load

The parts, each of one job (benches/README.md, "How the benchmark is built"):
  common.py     ports, the request, the run's state (work folder, options, upstream), small helpers
  procs.py      starting and stopping processes; CPU, memory and sockets from /proc
  peers.py      certificates, the configurations of the upstream and the proxies, start / ready / stop
  load.py       wrk rounds with CPU accounting, new mTLS connections, idle connections
  scenarios.py  the measurements of a run (throughput, inbound, idle, startup, reloads)
  report.py     the targets, latest.md and the machine it ran on
  bench.py      this file: the command line, and the run from start to report
"""

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile

import common
import report
import scenarios
from common import P, log, port_free
from peers import make_certs, start_upstream
from procs import stop_all


def parse_args():
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
    ap.add_argument("--proxies", nargs="+", choices=scenarios.THROUGHPUT_PEERS, default=list(scenarios.THROUGHPUT_PEERS),
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
    ap.add_argument("--upstream-workers", default="auto",
                    help="worker processes of the upstream nginx (default: one per core)")
    ap.add_argument("--out", default=None, help="results folder (default benches/results)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs)")
    ap.add_argument("--rerender", metavar="JSON", help="only rebuild latest.md from a results JSON")
    return ap.parse_args()


def rerender(a):
    """latest.md and latest.json again from a results JSON, with the options it was run with."""
    results = json.load(open(a.rerender))
    for k, v in results["args"].items():
        if k not in ("rerender", "out", "root"):
            setattr(a, k, v)
    print(report.write(results, a.out or os.path.dirname(os.path.abspath(a.rerender))))


def prepare(a):
    """Options completed from the machine; exits if a tool is missing or a port is taken."""
    if a.quick:
        a.secs, a.rounds, a.warmup, a.conn_secs, a.start_reps = 4, 1, 1, 4, 2
    if a.nice:
        os.nice(a.nice)
    a.bin = a.bin or os.path.join(a.root, "target/optimized/amity-mtls-proxy")
    a.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    a.haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    a.wrk = shutil.which("wrk") or "/usr/bin/wrk"
    for tool in (a.bin, a.nginx, a.haproxy, a.wrk):
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


def run(a):
    """Certificates, the upstream, the measurements in --only, then the report."""
    out_dir = a.out or os.path.join(a.root, "benches", "results")
    work = common.WORK = tempfile.mkdtemp(prefix="amity-bench-")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    argv = sys.argv[1:]
    if "--root" in argv:
        i = argv.index("--root")
        argv = argv[:i] + argv[i + 2:]
    results = dict(argv=argv, args={},
                   throughput=[], inbound_mtls={}, idle={}, startup={}, reloads={}, targets=[])
    try:
        results["machine"] = report.machine()
        results["args"] = {k: v for k, v in vars(a).items() if isinstance(v, (int, float, str, list, bool))}
        log(f"work folder {work}; proxy {a.bin} ({results['machine']['proxy_commit']})")
        make_certs(os.path.join(work, "certs"))
        start_upstream(h2=not a.upstream_h1, workers=a.upstream_workers)
        for name in ("startup", "throughput", "inbound", "idle", "reloads"):
            if name in a.only:
                scenarios.STEPS[name](results)
        md = report.write(results, out_dir)
        print()
        print(md)
        log(f"wrote {out_dir}/latest.md and latest.json")
    finally:
        stop_all()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


def main():
    a = common.ARGS = parse_args()
    if a.rerender:
        rerender(a)
        return
    prepare(a)
    run(a)


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
