#!/usr/bin/env python3
"""Checks the Docker build context without a Docker engine.

1. Applies .dockerignore with Docker's own rules (moby/patternmatcher: Go
   filepath.Match globs plus `**`, `!` exceptions, the last matching pattern
   wins, a pattern matching a parent folder covers everything under it) to the
   repository and to paths that must never be sent (keys, certs/, target/, .git).
2. Copies what the Dockerfile's build stage COPYs from that context into an
   empty folder and runs `cargo check --locked` there: the manifest parses,
   Cargo.lock is current and the crate compiles from those files alone (an
   include_str! of a file the image lacks fails here), as
   `cargo build --release --locked` in the image needs. Dependencies come
   from the repository's target/, so only the crate itself is checked anew.

usage: docker_context.py REPO_ROOT DOCKERFILE
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

MUST_BE_SENT = [
    "Cargo.toml",
    "Cargo.lock",
    ".cargo/config.toml",
    "config.yaml",
    "src/main.rs",
    "src/lib.rs",
    "scripts/deps.sh",
    "scripts/build-optimized.sh",
    "scripts/supply-chain.sh",
]
NEVER_SENT = [
    ".git/config",
    "target/release/amity-mtls-proxy",
    "certs/local-dev.key",
    "certs/dev-ca.crt",
    "src/forgotten.key",
    "src/certs/backend.crt",
    "backend.pem",
    "deploy/kubernetes/secret.template.yaml",
]


def glob_regex(pattern):
    """Docker's translation of one .dockerignore glob into a regex."""
    out, i = "^", 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                    out += "(.*/)?"
                else:
                    out += ".*"
            else:
                out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


def load_patterns(path):
    patterns = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            p = os.path.normpath(line[1:].strip() if exclusion else line).lstrip("/")
            patterns.append((exclusion, p, glob_regex(p)))
    return patterns


def ignored(patterns, path):
    """moby's MatchesOrParentMatches: True when `path` stays out of the context."""
    parents = path.split("/")[:-1]
    matched = False
    for exclusion, _, rx in patterns:
        if exclusion != matched:
            continue
        hit = bool(rx.match(path)) or any(
            rx.match("/".join(parents[: i + 1])) for i in range(len(parents))
        )
        if hit:
            matched = not exclusion
    return matched


def context_files(root, patterns):
    """The files `docker build` would send, walking as Docker does (skipping
    an ignored folder unless an exception pattern reaches inside it)."""
    exceptions = [p for exclusion, p, _ in patterns if exclusion]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel = lambda n: n if rel_dir == "." else f"{rel_dir}/{n}"
        keep = []
        for d in sorted(dirnames):
            r = rel(d)
            if not ignored(patterns, r) or any(e.startswith(r + "/") for e in exceptions):
                keep.append(d)
        dirnames[:] = keep
        files += [rel(n) for n in sorted(filenames) if not ignored(patterns, rel(n))]
    return files


def build_stage_copies(dockerfile):
    """(sources, destination) of every COPY in the first stage that reads the context."""
    copies, stages = [], 0
    with open(dockerfile) as f:
        for line in f:
            words = line.split()
            if not words:
                continue
            if words[0].upper() == "FROM":
                stages += 1
            elif words[0].upper() == "COPY" and stages == 1:
                args = [w for w in words[1:] if not w.startswith("--")]
                if any(w.startswith("--from") for w in words[1:]):
                    continue
                copies.append((args[:-1], args[-1]))
    return copies


def main():
    root, dockerfile = sys.argv[1], sys.argv[2]
    patterns = load_patterns(os.path.join(root, ".dockerignore"))
    problems = []
    for p in NEVER_SENT:
        if not ignored(patterns, p):
            problems.append(f".dockerignore lets {p} into the build context")
    sent = context_files(root, patterns)
    for p in MUST_BE_SENT:
        if p not in sent:
            problems.append(f"{p} is missing from the build context")
    for p in sent:
        top = p.split("/")[0]
        if top in (".git", "target", "certs") or p.endswith((".key", ".pem", ".csr")):
            problems.append(f"{p} would be sent to the Docker daemon")

    with tempfile.TemporaryDirectory() as stage:
        for sources, dest in build_stage_copies(dockerfile):
            for src in sources:
                for f in sent:
                    if f == src or f.startswith(src.rstrip("/") + "/"):
                        inner = os.path.relpath(f, src) if f != src else os.path.basename(f)
                        target = os.path.join(stage, dest, inner)
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        shutil.copy2(os.path.join(root, f), target)
        meta = subprocess.run(
            ["cargo", "check", "--locked", "--quiet", "--target-dir", os.path.join(os.path.abspath(root), "target")],
            cwd=stage,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if meta.returncode != 0:
            problems.append("the build stage's files do not make a buildable crate:\n" + meta.stderr)

    if problems:
        print("\n".join(f"docker context: {p}" for p in problems), file=sys.stderr)
        sys.exit(1)
    size = sum(os.path.getsize(os.path.join(root, f)) for f in sent)
    print(f"docker context: {len(sent)} files, {size // 1024} KiB; no keys, certs/, target/ or .git")


if __name__ == "__main__":
    main()
