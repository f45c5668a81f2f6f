#!/usr/bin/env python3
"""Checks that the library's layers import only downward, and that no folder holds an import
circle.

  python3 scripts/layers.py

Each folder of src/ is a layer, listed below from the bottom up; a file may name `crate::X`
only for X in its own layer or one listed before it. Prints every upward import with its
file and line, and exits 1 if there is one. main.rs and lib.rs stand above all layers.

It also lists each circle of files within one folder that import each other (`super::x`,
`self::x`, `crate::...::x`), and exits 1 if there is one: a file should be readable from the
files it imports.
"""

import pathlib
import re
import sys

LAYERS = ["model", "telemetry", "data", "control", "process", "tools"]


def main() -> int:
    src = pathlib.Path(__file__).resolve().parent.parent / "src"
    rank = {name: i for i, name in enumerate(LAYERS)}
    unknown = sorted(
        p.name for p in src.iterdir() if p.is_dir() and p.name not in rank
    )
    if unknown:
        print(f"src/ has folders that are in no layer: {', '.join(unknown)}")
        return 1
    crate_path = re.compile(r"\bcrate::(\w+)")
    grouped = re.compile(r"\bcrate::\{([^}]*)\}", re.S)
    upward, files = [], 0
    for layer in LAYERS:
        for f in sorted((src / layer).rglob("*.rs")):
            files += 1
            text = f.read_text()
            # Comments are blanked, lines kept, so that line numbers stay true.
            code = re.sub(r"//[^\n]*", "", text)
            named = [(m.start(), m.group(1)) for m in crate_path.finditer(code)]
            for m in grouped.finditer(code):
                named += [(m.start(), n.strip().split("::")[0]) for n in m.group(1).split(",")]
            for at, name in sorted(named):
                if name in rank and rank[name] > rank[layer]:
                    lineno = code.count("\n", 0, at) + 1
                    upward.append(
                        f"{f.relative_to(src.parent)}:{lineno}: {layer} imports {name}"
                    )
    for u in upward:
        print(u)
    circles = find_circles(src)
    for c in circles:
        print(f"circle in {c[0].parent.relative_to(src.parent)}/: {' -> '.join(p.stem for p in c)}")
    print(
        f"layers {' < '.join(LAYERS)}: {files} files, "
        f"{len(upward)} import(s) from a higher layer, {len(circles)} circle(s) within a folder"
    )
    return 1 if upward or circles else 0


def module_file(folder: pathlib.Path, name: str):
    """The file of module `name` beside the files of `folder`: name.rs or name/mod.rs."""
    for f in (folder / f"{name}.rs", folder / name / "mod.rs"):
        if f.is_file():
            return f
    return None


def imports_beside(f: pathlib.Path, src: pathlib.Path):
    """The files of f's own folder that f imports."""
    folder = f.parent
    code = re.sub(r"//[^\n]*", "", f.read_text())
    # The path of f's folder as the crate names it, e.g. crate::data::proxy.
    rel = folder.relative_to(src).parts
    crate_prefix = "crate::" + "::".join(rel) + "::" if rel else "crate::"
    names = set()
    for m in re.finditer(r"\b(super|self)::(\w+)", code):
        kind, name = m.groups()
        # From a mod.rs, `self::x` is a sibling; from x.rs, `super::y` is.
        if (kind == "super") == (f.name != "mod.rs"):
            names.add(name)
    for m in re.finditer(re.escape(crate_prefix) + r"(\w+)", code):
        names.add(m.group(1))
    grouped = r"\b(?:super|self|" + re.escape(crate_prefix[:-2]) + r")::\{([^}]*)\}"
    for m in re.finditer(grouped, code):
        names.update(n.strip().split("::")[0] for n in m.group(1).split(","))
    out = set()
    for n in names:
        g = module_file(folder, n)
        if g is not None and g != f:
            out.add(g)
    return out


def find_circles(src: pathlib.Path):
    """Strongly connected groups of two or more files within a folder (Tarjan's algorithm)."""
    files = [f for f in src.rglob("*.rs") if f.parent != src]
    graph = {f: imports_beside(f, src) for f in files}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for f in sorted(files):
        if f not in index:
            visit(f)
    return sorted(out)


if __name__ == "__main__":
    sys.exit(main())
