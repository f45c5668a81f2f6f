"""The report of a run: the machine it ran on, the targets checked, and the markdown of latest.md."""

import datetime
import json
import os
import platform
import subprocess

import common
from common import TOKEN_PATH

# HAProxy at its leanest (peers.haproxy_lean_conf): the targets are stated against it when the run has it.
LEAN = "haproxy-lean"


def machine():
    a = common.ARGS
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
    commit = commit or subprocess.run(["git", "-C", a.root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    if not os.environ.get("AMITY_BIN_LABEL"):
        dirty = subprocess.run(["git", "-C", a.root, "status", "--porcelain", "--", "src", "Cargo.toml"],
                               capture_output=True, text=True).stdout.strip()
    return dict(cpu=cpu, nproc=os.cpu_count(), free=mem, os=osr, kernel=platform.release(),
                nginx=ver([a.nginx, "-v"]), haproxy=ver([a.haproxy, "-v"]), wrk=ver([a.wrk, "-v"]),
                openssl=ver(["openssl", "version"]), proxy_bin=a.bin,
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


def render(results):
    """The markdown of latest.md."""
    L = []
    m = results["machine"]
    L.append("# amity-mtls-proxy vs nginx vs HAProxy: mTLS egress proxy, side by side\n")
    L.append(f"Run {m['date']} with `bash benches/compare.sh {' '.join(results['argv'])}`".rstrip() + ".\n")
    L.append(f"- Machine: {m['cpu']}, {m['nproc']} cores (nproc), {m['os']}, kernel {m['kernel']}")
    L.append(f"- Memory (free -h):\n\n```\n{m['free']}\n```\n")
    L.append(f"- Proxy: `{m['proxy_bin']}` built from {m['proxy_commit']}; {m['nginx']}; {m['haproxy']}; "
             f"{m['wrk']}; {m['openssl']}")
    a = results["args"]
    uw = a.get("upstream_workers", "auto")
    uw = m["nproc"] if uw == "auto" else uw
    L.append(f"- Load: wrk -t1, keep-alive, GET {TOKEN_PATH} with `x-server-key: k`; {a['rounds']} rounds of "
             f"{a['secs']} s per proxy and connection count, alternating; the load generator, the upstream nginx "
             f"({uw} worker{'' if str(uw) == '1' else 's'}) and the proxy share the same cores. "
             "Certificates: ECDSA P-256, TLS 1.3."
             + (f" Everything the benchmark started ran at nice {a['nice']}." if a.get("nice") else "") + "\n")
    lean = any(r["proxy"] == LEAN for r in results["throughput"])
    if lean:
        L.append("- Peers: nginx at its leanest (one worker process per worker of the mode, no access log, a "
                 "keep-alive upstream pool); haproxy with the allow-list ACLs and master-worker (`-W`); haproxy-lean at its "
                 "leanest: a bare backend (`http-reuse always`, `alpn h2,http/1.1`), no ACLs, no master-worker. "
                 "haproxy-lean forwards every request: it does less than the others, which check the allow-list.\n")

    for mode in ("1 worker", "all cores"):
        rows = [r for r in results["throughput"] if r["mode"] == mode]
        if not rows:
            continue
        L.append(f"## Keep-alive throughput, {mode}\n")
        L.append("| conns | proxy | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS MiB | upstream conns | new upstream conns /10k req | errors | req/s ÷ nginx | p99 ÷ nginx | CPU ÷ nginx | other load, cores |"
                 + (" req/s ÷ haproxy-lean | CPU ÷ haproxy-lean |" if lean else ""))
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if lean else ""))
        for conns in sorted({r["conns"] for r in rows}):
            cr = [r for r in rows if r["conns"] == conns]
            ng = next((r for r in cr if r["proxy"] == "nginx"), None)
            hl = next((r for r in cr if r["proxy"] == LEAN), None)
            for r in cr:
                isp = "cpu_us_per_req" in r
                by_lean = [fr(ratio(r["rps"], hl and hl["rps"])),
                           fr(ratio(r.get("cpu_us_per_req"), hl and hl.get("cpu_us_per_req"))) if isp else "–"]
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
                ] + (by_lean if lean else [])) + " |")
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
    """The targets, each checked against the run's figures, in results["targets"]."""
    a = common.ARGS
    T = []

    def row(mode, conns, proxy):
        return next((r for r in results["throughput"]
                     if r["mode"] == mode and r["conns"] == conns and r["proxy"] == proxy), None)

    def yn(b):
        return "n/a" if b is None else ("yes" if b else "**no**")

    for mode in ("1 worker", "all cores"):
        for conns in a.conns:
            o, n = row(mode, conns, "ours"), row(mode, conns, "nginx")
            acl, hl = row(mode, conns, "haproxy"), row(mode, conns, LEAN)
            # Stated against the leanest HAProxy the run has; the one with ACLs is given beside it.
            h = hl or acl
            if not (o and n and h):
                continue
            hname = "HAProxy lean" if hl else "HAProxy"
            also = lambda k, fmt: f", HAProxy with ACLs {fmt(acl[k])}" if hl and acl else ""
            sc = f"{mode}, c={conns}"
            cr = ratio(o["cpu_us_per_req"], n["cpu_us_per_req"])
            hr = ratio(o["cpu_us_per_req"], h["cpu_us_per_req"])
            T.append(dict(target=f"CPU/req ≤ 0.75 × nginx and ≤ {hname}", scope=sc,
                          ours=f"{o['cpu_us_per_req']:.1f} µs ({cr:.2f} × nginx"
                               + (f", {hr:.2f} × {hname})" if hl else ")"),
                          ref=f"nginx {n['cpu_us_per_req']:.1f}, {hname} {h['cpu_us_per_req']:.1f}"
                              + also("cpu_us_per_req", lambda x: f"{x:.1f}") + " µs",
                          met=yn(cr <= 0.75 and o["cpu_us_per_req"] <= h["cpu_us_per_req"])))
            if conns == 32:
                rr = ratio(o["rps"], n["rps"])
                hrr = ratio(o["rps"], h["rps"])
                T.append(dict(target=f"req/s at 32 conns ≥ 1.1 × nginx and ≥ {hname}", scope=sc,
                              ours=f"{o['rps']:,.0f} ({rr:.2f} × nginx" + (f", {hrr:.2f} × {hname})" if hl else ")"),
                              ref=f"nginx {n['rps']:,.0f}, {hname} {h['rps']:,.0f}" + also("rps", lambda x: f"{x:,.0f}"),
                              met=yn(rr >= 1.1 and o["rps"] >= h["rps"])))
            pr = ratio(o["p99_us"], n["p99_us"])
            T.append(dict(target="p99 ≤ 1.0 × nginx", scope=sc, ours=f"{o['p99_us'] / 1000:.2f} ms ({pr:.2f})",
                          ref=f"nginx {n['p99_us'] / 1000:.2f} ms", met=yn(pr <= 1.0)))
            hs = o.get("metrics_handshakes_per_10k")
            T.append(dict(target="upstream handshakes /10k req ≤ 1 per pooled connection", scope=sc,
                          ours=f"{hs:.2f} /10k (metrics), {o['upstream_new_conns_per_10k']:.2f} (upstream count); "
                               f"{o['upstream_conns']} pooled",
                          ref=f"nginx {n['upstream_new_conns_per_10k']:.2f} ({n['upstream_conns']} pooled), "
                              f"{hname} {h['upstream_new_conns_per_10k']:.2f} ({h['upstream_conns']} pooled)",
                          # pooled connections cannot usefully exceed the concurrency: a pool that churns
                          # (opens a connection per request and closes it) must not pass by inflating the count
                          met=yn(hs is not None and hs <= max(min(o["upstream_conns"], conns), 1))))
    idl = results["idle"]
    if "ours" in idl and "nginx" in idl:
        r = ratio(idl["ours"]["rss_kib"], idl["nginx"]["rss_kib"])
        T.append(dict(target=f"RSS with {a.idle} idle conns ≤ 1.5 × nginx", scope="all cores",
                      ours=f"{idl['ours']['rss_kib'] / 1024:.1f} MiB ({r:.2f})",
                      ref=f"nginx {idl['nginx']['rss_kib'] / 1024:.1f} MiB", met=yn(r <= 1.5)))
    rl = results["reloads"]
    if "ours" in rl:
        T.append(dict(target=f"0 failed requests during {a.reloads} reloads", scope="all cores, c=32",
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


def write(results, out_dir):
    """Checks the targets, writes latest.md and latest.json into out_dir; returns the markdown."""
    targets(results)
    md = render(results)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "latest.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(out_dir, "latest.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    return md
