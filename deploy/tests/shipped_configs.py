#!/usr/bin/env python3
"""Checks that the deploy files agree with the built binary.

- Every command line they give it (the Deployment's args, the unit's
  ExecStart, the compose services' commands) is accepted by its argument
  parser: each is run with --help appended, which parses every option first.
- Every config.yaml they ship (the ConfigMap's, the systemd one, the compose
  one) passes `amity-mtls-proxy check`: the files each names are made with
  the binary's own dev CA under a temporary root that stands in for /, at the
  paths the config gives (relative ones beside the config, as the proxy
  resolves them), and the config's absolute paths are moved under that root.

usage: shipped_configs.py REPO_ROOT BINARY
"""

import os
import shutil
import subprocess
import sys
import tempfile

import yaml

DEPLOY = "deploy"
# Where each shipped config lives at run time, per the file that mounts it.
CONFIGS = {
    "kubernetes ConfigMap": ("kubernetes/configmap.yaml", "/etc/amity-mtls-proxy/config.yaml"),
    "systemd": ("systemd/config.yaml", "/etc/amity-mtls-proxy/config.yaml"),
    "docker compose": ("docker/config.yaml", "/home/nonroot/compose.yaml"),
}


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def command_lines(deploy):
    with open(os.path.join(deploy, "kubernetes/deployment.yaml")) as f:
        pod = yaml.safe_load(f)["spec"]["template"]["spec"]
    for c in pod["containers"]:
        yield f"Deployment container {c['name']}", c["args"]
    with open(os.path.join(deploy, "systemd/amity-mtls-proxy.service")) as f:
        for line in f:
            if line.startswith("ExecStart="):
                yield "unit ExecStart", line.split("=", 1)[1].split()[1:]
    with open(os.path.join(deploy, "docker/docker-compose.yaml")) as f:
        for name, service in yaml.safe_load(f)["services"].items():
            yield f"compose service {name}", service["command"]


def shipped_config(deploy, source):
    with open(os.path.join(deploy, source)) as f:
        text = f.read()
    if source.endswith("configmap.yaml"):
        return yaml.safe_load(text)["data"]["config.yaml"]
    return text


def make_files(binary, config, config_dir, root, work):
    """Creates every file `config` names; returns {path in config: path on disk}."""
    ca_dir = os.path.join(work, "ca")
    if not os.path.exists(ca_dir):
        subprocess.run([binary, "dev-ca", "init", "--dir", ca_dir], check=True, capture_output=True)

    def on_disk(p):
        return os.path.join(root, p.lstrip("/")) if p.startswith("/") else os.path.join(config_dir, p)

    def place(p, source=None, text=None):
        dest = on_disk(p)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if source:
            shutil.copy(source, dest)
        else:
            with open(dest, "w") as f:
                f.write(text)
        return dest

    made = {}
    for c in config.get("client_certs") or []:
        name = c["name"]
        subprocess.run([binary, "cert", "new", "--name", name, "--dir", work, "--force"], check=True, capture_output=True)
        subprocess.run(
            [binary, "dev-ca", "sign", "--csr", f"{work}/{name}.csr", "--out", f"{work}/{name}.crt", "--dir", ca_dir],
            check=True,
            capture_output=True,
        )
        made[c["cert"]] = place(c["cert"], f"{work}/{name}.crt")
        made[c["key"]] = place(c["key"], f"{work}/{name}.key")
    inbound = config.get("inbound_tls") or {}
    for key, source in (("cert", "dev-server.crt"), ("key", "dev-server.key"), ("client_ca", "dev-ca.crt")):
        if key in inbound:
            made[inbound[key]] = place(inbound[key], os.path.join(ca_dir, source))
    if (config.get("upstream") or {}).get("ca"):
        made[config["upstream"]["ca"]] = place(config["upstream"]["ca"], os.path.join(ca_dir, "dev-ca.crt"))
    for key in ("server_key_file", "admin_token_file"):
        if config.get(key):
            made[config[key]] = place(config[key], text="placeholder-not-a-secret\n")
    return made


def main():
    repo, binary = sys.argv[1], os.path.abspath(sys.argv[2])
    deploy = os.path.join(repo, DEPLOY)
    problems = []

    for what, args in command_lines(deploy):
        parsed = run([binary, *args, "--help"])
        if parsed.returncode != 0:
            problems.append(f"{what}: the binary refuses {' '.join(args)}:\n{parsed.stderr}")

    for what, (source, at) in CONFIGS.items():
        text = shipped_config(deploy, source)
        config = yaml.safe_load(text)
        with tempfile.TemporaryDirectory() as tmp:
            root, work = os.path.join(tmp, "root"), os.path.join(tmp, "work")
            os.makedirs(work)
            config_path = os.path.join(root, at.lstrip("/"))
            os.makedirs(os.path.dirname(config_path))
            for named, real in make_files(binary, config, os.path.dirname(config_path), root, work).items():
                if named.startswith("/"):
                    text = text.replace(named, real)
            with open(config_path, "w") as f:
                f.write(text)
            checked = run([binary, "check", "-c", config_path])
            if checked.returncode != 0:
                problems.append(f"{what} ({source}): check failed:\n{checked.stdout}{checked.stderr}")

    if problems:
        sys.exit("\n".join(problems))
    print(f"deploy files: command lines accepted; {len(CONFIGS)} shipped configs pass `check`")


if __name__ == "__main__":
    main()
