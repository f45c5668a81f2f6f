#!/usr/bin/env python3
"""Checks the monitoring files against the proxy itself.

- Every PromQL query in the Grafana dashboard parses: the queries, with the
  dashboard's variables filled in, become recording rules for
  `promtool check rules`.
- Every amity_proxy_* series that the dashboard or the alert rules name is one
  that the running proxy's /metrics really exports.

usage: check_queries.py PROMTOOL LIVE_METRICS DASHBOARD_JSON ALERTS_YAML
"""

import json
import os
import re
import subprocess
import sys
import tempfile

GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": ".*",
    "$instance": ".*",
    "$app": ".*",
}
METRIC = re.compile(r"\bamity_proxy_[a-z0-9_]+")


def dashboard_queries(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        for v in node.values():
            yield from dashboard_queries(v)
    elif isinstance(node, list):
        for v in node:
            yield from dashboard_queries(v)


def exported_series(metrics_text):
    names = set()
    for line in metrics_text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def main():
    promtool, live, dashboard_path, alerts_path = sys.argv[1:5]
    with open(dashboard_path) as f:
        dashboard = json.load(f)
    queries = []
    for q in dashboard_queries(dashboard):
        for var, value in GRAFANA_VARIABLES.items():
            q = q.replace(var, value)
        queries.append(q)
    if not queries:
        sys.exit(f"{dashboard_path}: no queries found")

    # JSON is YAML, so promtool reads this as a rule file.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)],
            }
        ]
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dashboard-queries.yaml")
        with open(path, "w") as f:
            json.dump(rules, f)
        check = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if check.returncode != 0:
            sys.exit(f"{dashboard_path}: a query does not parse:\n{check.stdout}{check.stderr}")

    with open(live) as f:
        exported = exported_series(f.read())
    with open(alerts_path) as f:
        alerts_text = f.read()
    missing = []
    for source, text in ((dashboard_path, "\n".join(queries)), (alerts_path, alerts_text)):
        for name in sorted(set(METRIC.findall(text))):
            if name not in exported:
                missing.append(f"{source}: {name} is not exported by the proxy")
    if missing:
        sys.exit("\n".join(missing))
    print(f"monitoring: {len(queries)} dashboard queries parse; every series they and the alerts name is exported")


if __name__ == "__main__":
    main()
