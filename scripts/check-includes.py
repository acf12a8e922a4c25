#!/usr/bin/env python3
"""Checks the quoted #include graph of the C sources (stdlib only).

    scripts/check-includes.py [--root DIR]

Reads every .c and .h under mesh/, auth/, keys/, certs/ and include/, and
follows each `#include "..."` (relative to the including file, else
include/, as cc -Iinclude does: "pigato.h" is include/pigato.h). Fails
(exit 1) and prints what it found when:

  * files include each other in a circle (a -> b -> a);
  * folders do: a folder is the directory a file is in (mesh/base,
    mesh/wire, auth, ...), and folder A depends on folder B when a file in
    A includes a file in B;
  * a lower layer includes a higher one. Layers, low to high:
        0  include, mesh/base
        1  mesh/wire, auth, keys, certs
        2  mesh/broker, mesh/library
        3  mesh/programs
    Includes between different folders of one layer are allowed as long as
    they make no circle;
  * a quoted include cannot be resolved, resolves outside the checked
    folders, or comes from a folder that has no layer here (add it to
    LAYERS).

Exit 0 with a one-line summary when none of this is found; 2 on usage
errors.
"""

import argparse
import os
import re
import sys

ROOTS = ("mesh", "auth", "keys", "certs", "include")
INCLUDE_DIRS = ("include",)     # the Makefile's -I, for "pigato.h"
LAYERS = {
    "include": 0, "mesh/base": 0,
    "mesh/wire": 1, "auth": 1, "keys": 1, "certs": 1,
    "mesh/broker": 2, "mesh/library": 2,
    "mesh/programs": 3,
}
# Folders of one layer that must not use each other even without a circle:
# the broker and the library share only what lies below them
APART = {("mesh/broker", "mesh/library"), ("mesh/library", "mesh/broker")}
LAYER_NAMES = ["include, mesh/base", "mesh/wire, auth, keys, certs",
               "mesh/broker, mesh/library", "mesh/programs"]
INCLUDE_RE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')


def source_files(root):
    """Project-relative paths (with '/') of every .c and .h to check."""
    found = []
    for top in ROOTS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith((".c", ".h")):
                    path = os.path.relpath(os.path.join(dirpath, name), root)
                    found.append(path.replace(os.sep, "/"))
    return found


def resolve(root, including, target):
    """Project-relative path a quoted include names, or None."""
    candidates = [os.path.join(os.path.dirname(including), target)]
    candidates += [os.path.join(d, target) for d in INCLUDE_DIRS]
    for candidate in candidates:
        path = os.path.normpath(candidate).replace(os.sep, "/")
        if os.path.isfile(os.path.join(root, path)):
            return path
    return None


def folder(path):
    return os.path.dirname(path) or "."


def read_includes(root, files):
    """edges: {file: [(included file, line number)]}; problems: [text]."""
    checked = set(files)
    edges = {path: [] for path in files}
    problems = []
    for path in files:
        with open(os.path.join(root, path), errors="replace") as f:
            for number, line in enumerate(f, 1):
                match = INCLUDE_RE.match(line)
                if not match:
                    continue
                target = resolve(root, path, match.group(1))
                where = "%s:%d" % (path, number)
                if target is None:
                    problems.append('%s: cannot resolve #include "%s"'
                                    % (where, match.group(1)))
                elif target not in checked:
                    problems.append('%s: #include "%s" is %s, outside %s'
                                    % (where, match.group(1), target,
                                       ", ".join(ROOTS)))
                else:
                    edges[path].append((target, number))
    return edges, problems


def cycles(graph):
    """One cycle (a list of nodes, first == last) per strongly connected
    component that has a circle, found with Tarjan's algorithm."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = [0]

    def visit(start):
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(cycle_in(graph, component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def cycle_in(graph, component):
    """A shortest circle through the component's first node (BFS)."""
    start = min(component)
    previous, queue, seen = {}, [start], {start}
    while queue:
        node = queue.pop(0)
        for child in sorted(graph.get(node, ())):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return path[::-1] + [start]
            if child in component and child not in seen:
                seen.add(child)
                previous[child] = node
                queue.append(child)
    return sorted(component)


def check(root):
    """Returns (summary, [problem text])."""
    files = source_files(root)
    edges, problems = read_includes(root, files)

    file_graph = {path: {t for t, _ in targets} for path, targets in edges.items()}
    for circle in cycles(file_graph):
        problems.append("file circle: " + " -> ".join(circle))

    # folder graph, with one example include per folder edge
    folder_graph, example = {}, {}
    for path, targets in edges.items():
        for target, number in targets:
            a, b = folder(path), folder(target)
            if a == b:
                continue
            folder_graph.setdefault(a, set()).add(b)
            example.setdefault((a, b), "%s:%d includes %s" % (path, number, target))
    for circle in cycles(folder_graph):
        hops = ["  %s -> %s: %s" % (a, b, example[(a, b)])
                for a, b in zip(circle, circle[1:])]
        problems.append("folder circle: " + " -> ".join(circle) + "\n"
                        + "\n".join(hops))

    for path, targets in sorted(edges.items()):
        for target, number in targets:
            a, b = folder(path), folder(target)
            if a == b:
                continue
            for name in (a, b):
                if name not in LAYERS:
                    problems.append("%s:%d: folder %s has no layer in "
                                    "scripts/check-includes.py LAYERS"
                                    % (path, number, name))
            if (a, b) in APART:
                problems.append(
                    "apart: %s:%d includes %s (%s and %s share only what "
                    "lies below them)" % (path, number, target, a, b))
            if a in LAYERS and b in LAYERS and LAYERS[a] < LAYERS[b]:
                problems.append(
                    "layer violation: %s:%d includes %s (%s is layer %d, "
                    "%s is layer %d: lower layers must not include higher "
                    "ones)" % (path, number, target, a, LAYERS[a], b,
                               LAYERS[b]))
    count = sum(len(t) for t in edges.values())
    summary = ("check-includes: %d files, %d quoted includes, %d folders: "
               "no circles, no layer violations"
               % (len(files), count, len({folder(p) for p in files})))
    return summary, problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), ".."),
        help="project root (default: this script's parent folder)")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    if not os.path.isdir(root):
        print("check-includes: no such folder: %s" % root, file=sys.stderr)
        return 2
    summary, problems = check(root)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print("check-includes: %d problem(s). Layers, low to high: %s. A "
              "file may include its own folder, lower layers, and other "
              "folders of its layer when that makes no circle."
              % (len(problems), "; ".join(
                  "%d: %s" % pair for pair in enumerate(LAYER_NAMES))),
              file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
