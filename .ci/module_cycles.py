#!/usr/bin/env python3
"""Fails when the top-level modules of a crate import each other in a cycle (ARCHITECTURE.md:
inside a crate, imports point down). Crates cannot form cycles (cargo refuses them); modules can.

    .ci/module_cycles.py [CRATE_SRC_DIR ...]    (default: every crate of the workspace)

An edge a -> b is any `crate::b` path (including `use crate::{b::X, c}` groups) in the files of
top-level module a, test modules left out (tests may reach across the crate).
"""
import glob
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    # Unit tests sit at the end of a file behind #[cfg(test)].
    cut = text.find("#[cfg(test)]")
    return text if cut < 0 else text[:cut]


def edges(src_dir):
    graph = {}
    for path in glob.glob(os.path.join(src_dir, "**", "*.rs"), recursive=True):
        rel = os.path.relpath(path, src_dir)
        top = rel.split(os.sep)[0].removesuffix(".rs")
        if top in ("lib", "main", "bin"):
            continue
        text = strip(open(path, encoding="utf-8").read())
        targets = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            targets.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
        for target in targets - {top}:
            graph.setdefault(top, {}).setdefault(target, rel)
        graph.setdefault(top, {})
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main():
    dirs = sys.argv[1:] or [os.path.join(ROOT, "src")] + sorted(
        glob.glob(os.path.join(ROOT, "crates", "*", "src"))
    )
    failed = False
    for src in dirs:
        graph = edges(src)
        for component in cycles(graph):
            failed = True
            print(f"{os.path.relpath(src, ROOT)}: modules import each other in a cycle: "
                  + ", ".join(component), file=sys.stderr)
            for a in component:
                for b, where in sorted(graph[a].items()):
                    if b in component:
                        print(f"  {a} -> {b} ({where})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
