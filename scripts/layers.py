#!/usr/bin/env python3
"""Checks that the library's layers import only downward.

  python3 scripts/layers.py

Each folder of src/ is a layer, listed below from the bottom up; a file may name `crate::X`
only for X in its own layer or one listed before it. Prints every upward import with its
file and line, and exits 1 if there is one. main.rs and lib.rs stand above all layers.
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
    print(
        f"layers {' < '.join(LAYERS)}: {files} files, "
        f"{len(upward)} import(s) from a higher layer"
    )
    return 1 if upward else 0


if __name__ == "__main__":
    sys.exit(main())
