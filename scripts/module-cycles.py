#!/usr/bin/env python3
"""Reads cargo-modules' dependency graph of a crate (DOT, on stdin) and fails if its modules
depend on each other in a circle.

cargo-modules' own `--acyclic` works at the level of items, where a type and its own methods
already form a circle; what matters for reading the code is the modules. So every "uses"
edge between two items is lifted to an edge between the modules that define them, and the
module graph is checked: edges of a module to itself, and of a folder's `mod.rs` to the
modules under it (re-exports), are left out. Prints each circle found, and the graph's
layers, lowest first, when there is none.
"""
import re
import sys

mods, edges = set(), set()
for line in sys.stdin:
    m = re.match(r'\s*"([^"]+)" \[label="[^|]*\bmod\|', line)
    if m or re.match(r'\s*"([^"]+)" \[label="crate\|', line):
        mods.add(re.match(r'\s*"([^"]+)"', line).group(1))
        continue
    m = re.match(r'\s*"([^"]+)" -> "([^"]+)" \[label="uses"', line)
    if m:
        edges.add((m.group(1), m.group(2)))


def module_of(path):
    while path not in mods:
        path = path.rsplit("::", 1)[0]
    return path


graph = {m: set() for m in mods}
areas = {}
for a, b in edges:
    ma, mb = module_of(a), module_of(b)
    # A module using its own items, or a module's `use` declarations naming (re-exporting)
    # what is below it; what its own items use below it counts.
    if ma == mb or (a == ma and mb.startswith(ma + "::")):
        continue
    graph[ma].add(mb)
    # The areas: the crate's top-level modules (folders), for the layers.
    aa, ab = (m.split("::")[1] if "::" in m else m for m in (ma, mb))
    if aa != ab and "::" in ma and "::" in mb:
        areas.setdefault(aa, set()).add(ab)
        areas.setdefault(ab, set())

# Tarjan's strongly connected components.
index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]


def strong(v):
    index[v] = low[v] = n[0]
    n[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(graph[v]):
        if w not in index:
            strong(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        sccs.append(comp)


sys.setrecursionlimit(10000)
for v in sorted(graph):
    if v not in index:
        strong(v)
circles = [c for c in sccs if len(c) > 1]
if circles:
    for c in circles:
        members = set(c)
        print("circle:", ", ".join(sorted(c)))
        for a in sorted(c):
            for b in sorted(graph[a] & members):
                print(f"    {a} -> {b}")
    sys.exit(1)
print(f"{len(graph)} modules, {sum(len(v) for v in graph.values())} dependencies between them, no circle")

# The areas in layers: each depends only on areas in layers below it.
layers, placed = [], set()
while len(placed) < len(areas):
    layer = sorted(a for a in areas if a not in placed and areas[a] <= placed)
    if not layer:
        print("the areas depend on each other in a circle:", ", ".join(sorted(set(areas) - placed)))
        for a in sorted(set(areas) - placed):
            print(f"    {a} -> {', '.join(sorted(areas[a] - placed))}")
        sys.exit(1)
    layers.append(layer)
    placed.update(layer)
for i, layer in enumerate(layers):
    print(f"layer {i}: {', '.join(layer)}")
