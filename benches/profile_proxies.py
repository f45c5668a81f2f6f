#!/usr/bin/env python3
"""Profiles of the three proxies under the same keep-alive token-GET load as bench.py.

  python3 benches/profile_proxies.py [--bin target/optimized/amity-mtls-proxy] [--perf] [--callgrind]

--callgrind  instructions per request for ours, nginx and HAProxy (one worker each), counted by
             valgrind's callgrind over a fixed load after a warm-up: repeatable, not disturbed by
             other jobs on the machine. Writes benches/results/callgrind-*.txt (top functions).
--cache-sim  with --callgrind: also cache misses per request from valgrind's cache model (this
             machine has no hardware counters); with --conns 256, what many connections cost in memory.
--syscalls   strace -c: system calls per request for the three proxies.
--perf       perf record (cpu-clock, DWARF call graphs) of each proxy in --only at full load, one
             worker, the kernel's share included. Writes benches/results/perf-<proxy>.txt.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import peers  # noqa: E402
from common import P, log, write  # noqa: E402
from load import wrk  # noqa: E402
from peers import Proxy  # noqa: E402
from procs import spawn, stop, stop_all  # noqa: E402


def parse_callgrind(path):
    """Self and inclusive Ir per function, and the object each lives in (callgrind_annotate 3.19
    misreads Rust-heavy dumps made after callgrind_control -z, so the file is read here)."""
    names, fn_obj = {}, {}
    self_ir, incl_calls = {}, {}
    cur, cur_ob, ob_names = None, None, {}
    after_calls, call_target = False, None
    total = 0

    def name(tag_val, table):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?", tag_val)
        if not m:
            return tag_val
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), m.group(1))

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                ir = int(parts[1]) if len(parts) > 1 else 0
                if after_calls:
                    if call_target != cur:
                        incl_calls[cur] = incl_calls.get(cur, 0) + ir
                    after_calls = False
                else:
                    self_ir[cur] = self_ir.get(cur, 0) + ir
                continue
            if line.startswith("fn="):
                cur = name(line[3:], names)
                fn_obj.setdefault(cur, cur_ob)
            elif line.startswith("ob="):
                cur_ob = name(line[3:], ob_names)
            elif line.startswith("cob="):
                name(line[4:], ob_names)
            elif line.startswith("cfn="):
                call_target = name(line[4:], names)
            elif line.startswith("calls="):
                after_calls = True
            elif line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
    incl = {k: self_ir.get(k, 0) + incl_calls.get(k, 0) for k in set(self_ir) | set(incl_calls)}
    return total, self_ir, incl, fn_obj


def crate_of(fn, obj):
    obj = obj or ""
    if "libc.so" in obj or "ld-linux" in obj:
        return "glibc (malloc, memcpy, syscalls wrappers)"
    if "libcrypto" in obj:
        return "libcrypto (OpenSSL)"
    if "libssl" in obj:
        return "libssl (OpenSSL)"
    if not ("amity" in obj):
        return os.path.basename(obj) or "?"
    f = fn.lstrip("<&* ")
    if f.startswith("aws_lc") or f.startswith("aws-lc"):
        return "aws-lc (crypto)"
    m = re.match(r"(?:dyn |impl |mut )?([A-Za-z_][A-Za-z0-9_]*)::", f)
    if m:
        return m.group(1)
    if f.startswith("_ZN") or f.startswith("_R"):
        return "unmangled"
    return "other (C / inlined)"


def vg_pid(p):
    """The pid valgrind runs the program in (valgrind execs in place, so it is the spawned pid)."""
    return p.pid


def callgrind_one(kind, out_dir, requests_target, conns):
    work = common.WORK
    outf = os.path.join(work, f"callgrind.{kind}.out")
    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outf}", "--dump-instr=no",
          "--collect-atstart=yes", "--separate-threads=no", "--trace-children=no"]
    if common.ARGS.cache_sim:
        vg.append("--cache-sim=yes")
    if kind == "ours":
        cfg = write("ours-cg.yaml", peers.ours_conf(P["ours"], P["ours_admin"], workers=1))
        p = spawn(vg + [common.ARGS.bin, "run", "-c", cfg], "cg-ours",
                  env={"RUST_LOG": "warn", **peers.ours_env()})
        port = P["ours"]
    elif kind == "nginx":
        conf = peers.nginx_proxy_conf(1).replace("worker_processes 1;", "worker_processes 1;\nmaster_process off;")
        cfg = write("nginx-cg.conf", conf)
        p = spawn(vg + [common.ARGS.nginx, "-p", os.path.join(work, "nginx"), "-e",
                        os.path.join(work, "nginx", "error.log"), "-c", cfg, "-g", "daemon off;"], "cg-nginx")
        port = P["nginx"]
    elif kind == "haproxy-lean":
        cfg = write("haproxy-lean-cg.cfg", peers.haproxy_lean_conf(1))
        p = spawn(vg + [common.ARGS.haproxy, "-db", "-f", cfg], "cg-haproxy-lean")
        port = P["haproxy-lean"]
    else:
        conf = peers.haproxy_conf(1).replace(" expose-fd listeners", "")
        cfg = write("haproxy-cg.cfg", conf)
        p = spawn(vg + [common.ARGS.haproxy, "-db", "-f", cfg], "cg-haproxy")
        port = P["haproxy"]
    try:
        end = time.time() + 120
        while time.time() < end and not common.token_ok(port, 5):
            if p.poll() is not None:
                raise RuntimeError(f"{kind} under valgrind exited; see {work}/cg-{kind}.log")
            time.sleep(0.5)
        # warm-up: connections, pools, caches, lazy statics
        wrk(port, conns, 6)
        subprocess.run(["callgrind_control", "-z", str(vg_pid(p))], capture_output=True, timeout=60)
        a0 = peers.upstream_accepts()
        w = wrk(port, conns, max(3, requests_target))
        a1 = peers.upstream_accepts()
        subprocess.run(["callgrind_control", "-d", str(vg_pid(p))], capture_output=True, timeout=60)
        time.sleep(1)
    finally:
        stop(p, timeout=30)
    dumps = sorted(f for f in os.listdir(work) if f.startswith(f"callgrind.{kind}.out"))
    # the dump made by callgrind_control -d is the one with the zeroed counters: the largest suffix
    dump = max((os.path.join(work, f) for f in dumps), key=lambda f: (len(f), f))
    cands = [os.path.join(work, f) for f in dumps if re.search(r"\.\d+$", f)]
    if cands:
        dump = sorted(cands, key=lambda f: int(f.rsplit(".", 1)[1]))[0]
    total, events = None, {}
    with open(dump) as f:
        for line in f:
            if line.startswith("events:"):
                names = line.split()[1:]
            if line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
                events = dict(zip(names, map(int, line.split()[1:])))
    reqs = w["requests"]
    # With --cache-sim: simulated first-level instruction and data cache misses, and last-level ones.
    misses = {k: sum(events.get(k + s, 0) for s in ("mr", "mw")) / reqs for k in ("I1", "D1", "IL", "DL")}
    total2, self_ir, incl, fn_obj = parse_callgrind(dump)
    total = total or total2
    by_crate = {}
    for fn, ir in self_ir.items():
        k = crate_of(fn, fn_obj.get(fn))
        by_crate[k] = by_crate.get(k, 0) + ir
    with open(os.path.join(out_dir, f"callgrind-{kind}{common.ARGS.label}.txt"), "w") as f:
        f.write(f"# {kind}: {total:,} instructions over {reqs:,} requests = {total / reqs:,.0f} per request\n")
        f.write(f"# valgrind --tool=callgrind, wrk -c{conns}, one worker, counters zeroed after a 6 s warm-up"
                f"{'; upstream offers only http/1.1' if common.ARGS.upstream_h1 else ''}"
                f"{'; env ' + ' '.join(common.ARGS.ours_env) if common.ARGS.ours_env and kind == 'ours' else ''}\n\n")
        f.write("## self instructions by library / crate (per request)\n\n")
        for k, ir in sorted(by_crate.items(), key=lambda x: -x[1])[:25]:
            f.write(f"{ir / reqs:>10,.0f}  {100 * ir / total:5.1f}%  {k}\n")
        f.write("\n## top functions, self (per request)\n\n")
        for fn, ir in sorted(self_ir.items(), key=lambda x: -x[1])[:45]:
            f.write(f"{ir / reqs:>10,.0f}  {100 * ir / total:5.1f}%  {fn[:170]}\n")
        f.write("\n## top functions, inclusive (per request)\n\n")
        for fn, ir in sorted(incl.items(), key=lambda x: -x[1])[:90]:
            f.write(f"{ir / reqs:>10,.0f}  {100 * ir / total:5.1f}%  {fn[:170]}\n")
    shutil.copy(dump, os.path.join(common.WORK, f"keep-{kind}.callgrind"))
    new_up = max(a1 - a0 - 1, 0)
    log(f"{kind:<8} {total / reqs:>10,.0f} instructions/request ({reqs:,} requests, {new_up} new upstream connections)")
    return dict(instructions=total, requests=reqs, per_request=total / reqs, dump=dump, new_upstream=new_up,
                misses=misses if common.ARGS.cache_sim else None)


def perf_one(kind, out_dir, secs, conns):
    """perf record of one proxy (all its processes, one worker) at full load; CPU samples per
    request by shared object and symbol, the kernel's included."""
    px = Proxy(kind, kind, P[kind], 1).start()
    data = os.path.join(common.WORK, f"perf-{kind}.data")
    try:
        px.ready()
        wrk(px.port, conns, 3)
        pids = ",".join(str(p) for p in px.pids())
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "--call-graph", "dwarf,16384",
                                "-p", pids, "-o", data, "--", "sleep", str(secs)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        w = wrk(px.port, conns, secs + 1)
        rec.wait(60)
    finally:
        px.stop()
    report = lambda *args: subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none", *args],
                                          capture_output=True, text=True).stdout
    flat = report("--no-children", "--sort", "dso,symbol", "--percent-limit", "0.4")
    dso = report("--no-children", "--sort", "dso")
    child = report("--children", "--sort", "symbol", "--percent-limit", "2")
    samples = re.search(r"of event 'cpu-clock'.*?\n# Event count \(approx.\): (\d+)", dso, re.S)
    # cpu-clock's event count is in nanoseconds of CPU
    per_req = f"{int(samples.group(1)) / 1000 / (w['rps'] * secs):.1f} µs of CPU per request; " if samples else ""
    strip = lambda t: "\n".join(l for l in t.splitlines() if l.strip() and not l.startswith("#"))
    with open(os.path.join(out_dir, f"perf-{kind}{common.ARGS.label}.txt"), "w") as f:
        f.write(f"# perf record -e cpu-clock -F 999 --call-graph dwarf, {kind}, one worker, wrk -c{conns}, "
                f"{w['rps']:,.0f} req/s during the profile; {per_req}percentages are of the proxy's CPU\n\n"
                "## by shared object (self)\n")
        f.write(strip(dso) + "\n\n## by symbol (self, >= 0.4%)\n" + strip(flat) +
                "\n\n## by symbol (children = inclusive, >= 2%)\n" + strip(child) + "\n")
    log(f"{kind}: perf profile written ({w['rps']:,.0f} req/s while profiling; {per_req.rstrip('; ')})")


def syscalls(out_dir, secs, conns):
    """System calls per request, counted by strace -c on every process of each proxy (one worker)."""
    lines = []
    for kind in ("ours", "nginx", "haproxy"):
        px = Proxy(kind, kind, P[kind], common.ARGS.workers).start()
        try:
            px.ready()
            wrk(px.port, conns, 3)
            pids = px.pids()
            args = ["strace", "-c", "-f", "-o", os.path.join(common.WORK, f"strace-{kind}.txt")]
            for pid in pids:
                args += ["-p", str(pid)]
            st = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
            w = wrk(px.port, conns, secs)
            st.send_signal(signal.SIGINT)
            st.wait(30)
        finally:
            px.stop()
        calls, table = 0, {}
        for line in open(os.path.join(common.WORK, f"strace-{kind}.txt")):
            c = line.split()
            if len(c) >= 5 and c[0][0].isdigit() and c[-1] != "total":
                n = int(c[3])
                table[c[-1]] = n
            if c and c[-1] == "total":
                calls = int(c[2]) if len(c) >= 3 else 0
        calls = sum(table.values())
        reqs = w["requests"]
        top = ", ".join(f"{k} {v / reqs:.2f}" for k, v in sorted(table.items(), key=lambda x: -x[1])[:8])
        lines.append(f"{kind:<8} {calls / reqs:5.2f} syscalls/request over {reqs:,} requests: {top}")
        log(lines[-1])
    with open(os.path.join(out_dir, f"syscalls{common.ARGS.label}.txt"), "w") as f:
        f.write(f"# strace -c -f on all the proxy's processes, {common.ARGS.workers} worker(s), wrk -c{conns} for {secs} s\n")
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--bin", default=os.environ.get("AMITY_BIN"))
    ap.add_argument("--perf", action="store_true")
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--syscalls", action="store_true", help="strace -c: system calls per request")
    ap.add_argument("--only", nargs="+", default=["ours", "nginx", "haproxy"],
                    choices=["ours", "nginx", "haproxy", "haproxy-lean"],
                    help="the proxies for --callgrind and --perf (haproxy-lean: HAProxy without ACLs or master)")
    ap.add_argument("--secs", type=int, default=8, help="measured seconds per proxy")
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--ours-env", nargs="*", metavar="K=V", help="extra environment for our proxy")
    ap.add_argument("--upstream-h1", action="store_true", help="the upstream offers only http/1.1 by ALPN")
    ap.add_argument("--workers", type=int, default=1, help="workers for --syscalls")
    ap.add_argument("--cache-sim", action="store_true",
                    help="with --callgrind: also simulated cache misses per request (slower)")
    ap.add_argument("--label", default="", help="suffix for the output files, e.g. -mimalloc")
    a = ap.parse_args()
    if not (a.perf or a.callgrind or a.syscalls):
        a.perf = a.callgrind = a.syscalls = True
    a.bin = a.bin or os.path.join(a.root, "target/optimized/amity-mtls-proxy")
    need = [pkg for tool, pkg, on in (("valgrind", "valgrind", a.callgrind), ("strace", "strace", a.syscalls),
                                       ("perf", "linux-perf", a.perf), ("wrk", "wrk", True),
                                       ("nginx", "nginx-light", True), ("haproxy", "haproxy", True))
            if on and not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}"))]
    if need:
        log(f"installing from Debian: {' '.join(need)}")
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", *need], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not os.path.exists(a.bin):
        sys.exit(f"missing {a.bin}: run `bash scripts/build-optimized.sh` (or bash benches/compare.sh) first, or set AMITY_BIN")
    a.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    a.haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    a.wrk = shutil.which("wrk") or "/usr/bin/wrk"
    common.ARGS = a
    common.WORK = tempfile.mkdtemp(prefix="amity-profile-")
    out_dir = os.path.join(a.root, "benches", "results")
    os.makedirs(out_dir, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        peers.make_certs(os.path.join(common.WORK, "certs"))
        peers.start_upstream(h2=not a.upstream_h1)
        results = {}
        if a.callgrind:
            for kind in a.only:
                results[kind] = callgrind_one(kind, out_dir, a.secs, a.conns)
            with open(os.path.join(out_dir, f"callgrind-summary{a.label}.txt"), "w") as f:
                ng = results.get("nginx", {}).get("per_request")
                for k, r in results.items():
                    rr = f" ({r['per_request'] / ng:.2f} x nginx)" if ng else ""
                    f.write(f"{k:<8} {r['per_request']:>10,.0f} instructions/request over {r['requests']:,} requests{rr}; "
                            f"{r['new_upstream']} new upstream connections while counting"
                            + (f"; cache misses/request: I1 {r['misses']['I1']:,.0f}, D1 {r['misses']['D1']:,.0f}, "
                               f"LL {r['misses']['IL'] + r['misses']['DL']:,.0f}"
                               if r["misses"] else "") + "\n")
            print(open(os.path.join(out_dir, f"callgrind-summary{a.label}.txt")).read())
        if a.perf:
            for kind in a.only:
                perf_one(kind, out_dir, a.secs, a.conns)
        if a.syscalls:
            syscalls(out_dir, a.secs, a.conns)
    finally:
        stop_all()
        if a.keep:
            print("kept", common.WORK)
        else:
            shutil.rmtree(common.WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
