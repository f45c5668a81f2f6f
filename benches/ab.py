#!/usr/bin/env python3
"""Two builds of the proxy side by side: which one spends less CPU per request, which answers more.

  python3 benches/ab.py BIN_A BIN_B [--conns 32 256] [--pairs 8] [--secs 3] [--workers 1] [--nice -10]
                       [--b-extra YAML]

--b-extra appends config text to B's config only: the same build twice, with and without a
feature, gives that feature's cost (e.g. `--b-extra 'audit: {path: audit.jsonl}'`).

Both builds run at once against the same upstream nginx (as in bench.py), and wrk drives them in
short alternating rounds (A B B A ...). On a machine whose speed drifts from minute to minute
(benches/README.md says by how much), only rounds this close together can show a difference of
a few percent; the figure to read is the median of the per-pair ratios B / A.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import P, log, write  # noqa: E402
from load import measured_round, wrk  # noqa: E402
from peers import Proxy, make_certs, ours_conf, start_upstream  # noqa: E402
from procs import stop_all  # noqa: E402


def start(bin_path, port, admin, workers, extra=""):
    cfg = write(f"ours-{port}.yaml", ours_conf(port, admin, workers=workers) + extra)
    px = Proxy("ours", os.path.basename(bin_path), port, workers).run([bin_path, "run", "-c", cfg], f"ours-{port}", admin)
    px.ready()
    return px


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--conns", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--secs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--nice", type=int, default=0)
    ap.add_argument("--b-extra", default="", help="config text appended to B's config")
    a = ap.parse_args()
    # The proxies run in a work folder of their own.
    a.a, a.b = os.path.abspath(a.a), os.path.abspath(a.b)
    for b in (a.a, a.b):
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            sys.exit(f"{b}: not an executable file (build one with bash scripts/build-optimized.sh)")
    if a.nice:
        os.nice(a.nice)
    common.ARGS = argparse.Namespace(nginx=shutil.which("nginx") or "/usr/sbin/nginx",
                                     wrk=shutil.which("wrk") or "/usr/bin/wrk", upstream_h1=False)
    common.WORK = tempfile.mkdtemp(prefix="amity-ab-")
    try:
        make_certs(os.path.join(common.WORK, "certs"))
        start_upstream()
        pxs = [start(a.a, P["ours"], P["ours_admin"], a.workers),
               start(a.b, P["ours_info"], P["ours_info_admin"], a.workers, a.b_extra + "\n")]
        for conns in a.conns:
            for px in pxs:
                wrk(px.port, conns, 2)  # warm-up
            cpu, rps = ([], []), ([], [])
            for i in range(a.pairs):
                order = (0, 1) if i % 2 == 0 else (1, 0)
                for k in order:
                    r = measured_round(pxs[k], conns, a.secs)
                    cpu[k].append(r["cpu_us_per_req"])
                    rps[k].append(r["rps"])
                log(f"c={conns} pair {i + 1}: A {cpu[0][-1]:.1f} µs/req {rps[0][-1]:,.0f} req/s, "
                    f"B {cpu[1][-1]:.1f} µs/req {rps[1][-1]:,.0f} req/s")
            for name, unit, fig in (("CPU", "µs/req", cpu), ("throughput", "req/s", rps)):
                ratios = [b / x for x, b in zip(*fig)]
                print(f"c={conns} {name}: A median {statistics.median(fig[0]):,.2f} {unit}, "
                      f"B median {statistics.median(fig[1]):,.2f}; B / A per pair: median {statistics.median(ratios):.3f}, "
                      f"range {min(ratios):.3f}-{max(ratios):.3f} over {len(ratios)} pairs")
    finally:
        stop_all()
        shutil.rmtree(common.WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
