"""The measurements of a run, each filling its part of the results: keep-alive throughput, new
inbound mTLS connections, memory with idle connections, start to ready, reloads under load."""

import os
import statistics
import subprocess
import threading
import time

import common
from common import P, http_get, log, token_ok, wait_port, write
from load import conn_rate, idle_client, measured_round, one_mtls_request, summarize, wrk
from peers import Proxy, mval, ours_conf, ours_env, upstream_accepts
from procs import established, pss_kib, rss_kib

# The proxies of the measurements other than throughput.
PEERS = ("ours", "nginx", "haproxy")
# Throughput also has each peer at its leanest: haproxy-lean (nginx's configuration already is).
THROUGHPUT_PEERS = PEERS + ("haproxy-lean",)


def throughput(results):
    a = common.ARGS
    modes = [m for m in [("1 worker", 1), ("all cores", os.cpu_count())] if m[0] in a.modes]
    for mode, workers in modes:
        log(f"== throughput, {mode} ==")
        pxs = [Proxy(kind, kind, P[kind], workers) for kind in a.proxies]
        if not a.no_info and "ours" in a.proxies:
            pxs.append(Proxy("ours", "ours (log info)", P["ours_info"], workers, info_log=True))
        try:
            for px in pxs:
                px.start()
            for px in pxs:
                px.ready()
            log("warm-up")
            for px in pxs:
                wrk(px.port, max(a.conns), a.warmup)
                wrk(px.port, min(a.conns), 1)
            raw = {}
            for rnd in range(a.rounds):
                for conns in a.conns:
                    order = pxs[rnd % len(pxs):] + pxs[:rnd % len(pxs)]
                    if workers > 1 and not a.no_direct:
                        order = order + [None]
                    for px in order:
                        label = px.label if px else "direct (no proxy)"
                        r = measured_round(px, conns, a.secs)
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


def inbound_mtls(results):
    a = common.ARGS
    log("== new inbound mTLS connections per second ==")
    out = results["inbound_mtls"]
    workers = os.cpu_count()
    # ours: only if this build knows inbound_tls
    cfg = write("ours-tls.yaml", ours_conf(P["ours_tls"], P["ours_tls_admin"], inbound_tls=True))
    chk = subprocess.run([a.bin, "check", "-c", cfg], capture_output=True, text=True, cwd=common.WORK)
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
            px = Proxy("ours", "ours", P["ours_tls"], workers).run(
                [a.bin, "run", "-c", cfg], "ours-tls", P["ours_tls_admin"], env=ours_env())
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
            r = conn_rate(px.p.pid, port, a.conn_secs, a.conn_procs)
            out[label] = r
            log(f"{label:<8} {r['conns_per_s']:8.0f} conn/s  cpu/conn {r['cpu_us_per_conn']:.0f}us  failed {r['failed']}")
        finally:
            px.stop()


def idle(results):
    a = common.ARGS
    log(f"== RSS with {a.idle} idle inbound connections (one request each, then idle keep-alive) ==")
    workers = os.cpu_count()
    for kind in PEERS:
        px = Proxy(kind, kind, P[kind], workers).start()
        try:
            px.ready()
            wrk(px.port, 32, 2)
            time.sleep(0.5)
            base_rss, base_pss = rss_kib(px.pids()), pss_kib(px.pids())
            cl = idle_client(px.port, a.idle)
            line = cl.stdout.readline().split()
            opened = int(line[1]) if len(line) > 1 else 0
            failed = int(line[2]) if len(line) > 2 else a.idle
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
                f"  open {est}/{a.idle}  failed {failed}")
        finally:
            px.stop()


def startup(results):
    a = common.ARGS
    log("== time from start to ready ==")
    out = results["startup"]
    for kind in PEERS:
        times, first_ok = [], []
        for _ in range(a.start_reps):
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
                         reps=a.start_reps)
        log(f"{kind:<8} readyz {out[kind]['readyz_ms'] or float('nan'):7.1f} ms   first proxied 200 "
            f"{out[kind]['first_200_ms'] or float('nan'):7.1f} ms")


def reloads(results):
    a = common.ARGS
    log(f"== {a.reloads} reloads under load (wrk -c32) ==")
    for kind in PEERS:
        px = Proxy(kind, kind, P[kind], os.cpu_count()).start()
        try:
            px.ready()
            wrk(px.port, 32, 2)
            m0 = px.metrics()
            a0 = upstream_accepts()
            secs = int(a.reloads * a.reload_every + 3)
            res = {}
            th = threading.Thread(target=lambda: res.update(wrk(px.port, 32, secs)))
            th.start()
            time.sleep(1)
            for _ in range(a.reloads):
                px.reload()
                time.sleep(a.reload_every)
            th.join()
            m1 = px.metrics()
            a1 = upstream_accepts()
            r = dict(requests=res["requests"], failed=res["errors"],
                     breakdown={k: res[k] for k in ("connect", "read", "write", "status", "timeout")},
                     rps=res["rps"], p99_us=res["p99_us"], reloads=a.reloads,
                     upstream_new_conns=max(a1 - a0 - 1, 0))
            if kind == "ours":
                r["reloads_ok"] = mval(m1, 'amity_proxy_reloads_total{result="ok"}') - mval(m0, 'amity_proxy_reloads_total{result="ok"}')
            results["reloads"][kind] = r
            log(f"{kind:<8} failed {r['failed']} of {r['requests']} ({r['breakdown']})")
        finally:
            px.stop()


STEPS = dict(startup=startup, throughput=throughput, inbound=inbound_mtls, idle=idle, reloads=reloads)
