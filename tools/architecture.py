#!/usr/bin/env python3
"""The shape of the source tree, measured: files over the size limit, the
longest functions, handlers over their limit, and the import graph between
files (cycles, a module reaching up into the module that composes it, a
front end reaching into the other, or the core into a front end; only
the commands over both, `cli`, `check` and `info`, may use a front end).

    tools/architecture.py [--check] [ROOT]

Prints the figures; with --check, exits 1 when a rule is broken. ROOT is the
repository (default: this file's parent's parent). Test files (`tests.rs`,
`#[cfg(test)]` blocks) are left out; binaries' `main.rs` too.
"""

import collections
import glob
import os
import re
import sys

MAX_FILE_LINES = 400
MAX_HANDLER_LINES = 20
HANDLER_FILES = ("pull/api/handlers.rs", "pull/api/keys.rs")
FRONT_ENDS = ("pull", "push")
# The commands over both front ends (running one, checking what each needs).
COMMANDS = ("cli", "check", "info")

ITEM = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?"
    r"(?:struct|enum|fn|const|trait|type|static|mod)\s+(\w+)",
    re.M,
)
USE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.M)
PUB_USE = re.compile(r"^\s*pub(?:\([^)]*\))?\s+use\s+([^;]+);", re.M)
INLINE_PATH = re.compile(r"(?<![\w:])((?:crate|super)(?:::\w+)+)")
CHILD_PATH = re.compile(r"(?<![\w:])([a-z_]\w*(?:::\w+)+)")
FN = re.compile(r"^(\s*)(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:const\s+)?fn\s+(\w+)")


def without_tests(text):
    cut = text.find("#[cfg(test)]")
    return text if cut < 0 else text[:cut]


def source_files(src):
    """Module path (a tuple) -> source text, for every non-test file."""
    modules = {}
    for path in glob.glob(os.path.join(src, "**", "*.rs"), recursive=True):
        rel = os.path.relpath(path, src)
        if rel.endswith("tests.rs") or rel == "main.rs" or rel.startswith("bin/"):
            continue
        parts = rel[:-3].split("/")
        if parts[-1] in ("mod", "lib"):
            parts = parts[:-1]
        with open(path, encoding="utf-8") as f:
            modules[tuple(parts)] = (rel, without_tests(f.read()))
    return modules


def use_paths(body):
    """`a::{b, c::{d}}` -> [`a::b`, `a::c::d`]."""
    body = re.sub(r"\s+as\s+\w+", "", body)
    body = re.sub(r"\s+", "", body)

    def split_top(inner):
        items, depth, current = [], 0, ""
        for ch in inner:
            if ch == "," and depth == 0:
                items.append(current)
                current = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            current += ch
        return items + ([current] if current else [])

    def expand(prefix, text):
        brace = text.find("{")
        if brace < 0:
            return [prefix + text]
        close = len(text) - 1 - text[::-1].index("}")
        out = []
        for item in split_top(text[brace + 1 : close]):
            out += expand(prefix + text[:brace], item)
        return out

    return expand("", body)


class Graph:
    def __init__(self, modules):
        self.modules = modules
        self.items = {m: set(ITEM.findall(text)) for m, (_, text) in modules.items()}
        self.reexports = {}
        for m, (_, text) in modules.items():
            names = {}
            for body in PUB_USE.findall(text):
                for path in use_paths(body):
                    names[path.split("::")[-1]] = path
            self.reexports[m] = names

    def absolute(self, module, path):
        segs = path.split("::")
        if segs[0] == "crate":
            return segs[1:]
        if segs[0] == "self":
            return list(module) + segs[1:]
        base = list(module)
        if segs[0] == "super":
            while segs and segs[0] == "super":
                segs, base = segs[1:], base[:-1]
            return base + segs
        if tuple(base + [segs[0]]) in self.modules:
            return base + segs
        return None

    def resolve(self, module, path, depth=0):
        """The file whose item `path` names, following re-exports."""
        full = self.absolute(module, path)
        if full is None or depth > 10:
            return None
        for k in range(len(full), -1, -1):
            target = tuple(full[:k])
            if target not in self.modules:
                continue
            rest = full[k:]
            if rest and rest[0] in self.reexports[target]:
                again = self.reexports[target][rest[0]]
                again += "".join("::" + r for r in rest[1:])
                return self.resolve(target, again, depth + 1) or target
            return target
        return None

    def edges(self):
        found = collections.defaultdict(set)
        for m, (_, text) in self.modules.items():
            text = re.sub(r"//[^\n]*", "", text)
            paths = [p for body in USE.findall(text) for p in use_paths(body)]
            paths += INLINE_PATH.findall(text)
            paths += [
                p for p in CHILD_PATH.findall(text) if m + (p.split("::")[0],) in self.modules
            ]
            for path in paths:
                if path.endswith("::*") or path.endswith("::self"):
                    path = path.rsplit("::", 1)[0]
                target = self.resolve(m, path)
                if target is not None and target != m:
                    found[(m, target)].add(path)
        return found


def cycles(edges):
    graph = collections.defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def functions(path):
    """(lines, name) of every function outside test code."""
    with open(path, encoding="utf-8") as f:
        lines = without_tests(f.read()).split("\n")
    out, i = [], 0
    while i < len(lines):
        match = FN.match(lines[i])
        if not match:
            i += 1
            continue
        indent = len(match.group(1))
        j = i
        while j < len(lines) and not lines[j].rstrip().endswith(("{", ";")):
            j += 1
        if j >= len(lines) or lines[j].rstrip().endswith(";"):
            i = j + 1
            continue
        k = j + 1
        closing = " " * indent + "}"
        while k < len(lines) and not (
            lines[k].startswith(closing) and len(lines[k]) - len(lines[k].lstrip()) == indent
        ):
            k += 1
        out.append((k - i + 1, match.group(2)))
        i += 1
    return out


def name(module):
    return "::".join(module) or "crate"


def main(argv):
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    root = args[0] if args else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = os.path.join(root, "src")
    trees = [src] + sorted(glob.glob(os.path.join(root, "tools", "*", "src")))
    broken = []

    sizes, longest = [], []
    for tree in trees:
        for path in glob.glob(os.path.join(tree, "**", "*.rs"), recursive=True):
            if path.endswith("tests.rs"):
                continue
            rel = os.path.relpath(path, root)
            with open(path, encoding="utf-8") as f:
                sizes.append((sum(1 for _ in f), rel))
            longest += [(n, f"{rel} {fn}") for n, fn in functions(path)]
    big = sorted((s for s in sizes if s[0] > MAX_FILE_LINES), reverse=True)
    print(f"files over {MAX_FILE_LINES} lines: {len(big)}")
    for n, rel in big:
        print(f"  {n:5} {rel}")
        broken.append(f"{rel}: {n} lines")
    print("longest functions:")
    for n, where in sorted(longest, reverse=True)[:5]:
        print(f"  {n:5} {where}")

    handlers = []
    for rel in HANDLER_FILES:
        path = os.path.join(src, rel)
        if os.path.exists(path):
            handlers += [(n, f"src/{rel} {fn}") for n, fn in functions(path)]
    over = [h for h in handlers if h[0] > MAX_HANDLER_LINES]
    print(f"handlers over {MAX_HANDLER_LINES} lines: {len(over)} of {len(handlers)}")
    for n, where in over:
        print(f"  {n:5} {where}")
        broken.append(f"handler {where}: {n} lines")

    modules = source_files(src)
    edges = Graph(modules).edges()
    back = sorted(
        (a, b) for (a, b) in edges if len(b) < len(a) and a[: len(b)] == b
    )
    print(f"modules: {len(modules)}, imports between files: {len(edges)}")
    print(f"imports from a composing module: {len(back)}")
    for a, b in back:
        paths = ", ".join(sorted(edges[(a, b)]))
        print(f"  {name(a)} -> {name(b)} ({paths})")
        broken.append(f"{name(a)} imports from {name(b)}, which composes it")
    loops = cycles(edges)
    print(f"import cycles: {len(loops)}")
    for loop in loops:
        print("  " + " -> ".join(name(m) for m in loop))
        broken.append("cycle " + ", ".join(name(m) for m in loop))
    crossing = sorted(
        (a, b)
        for (a, b) in edges
        if b and b[0] in FRONT_ENDS and (not a or a[0] not in (b[0],) + COMMANDS)
    )
    print(f"imports into a front end from elsewhere: {len(crossing)}")
    for a, b in crossing:
        print(f"  {name(a)} -> {name(b)}")
        broken.append(f"{name(a)} imports the front end {name(b)}")

    if check and broken:
        print(f"\n{len(broken)} rule(s) broken", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
