#!/usr/bin/env python3
"""The import graph of a crate's modules, read from its `crate::` paths.

Usage: .ci/imports.py <crate>/src [--rule DIR=ALLOWED,...] [--layers LIB.rs]
                         [--doc ARCHITECTURE.md] [--report]

Reads every `crate::a::b` path in non-test code (a `#[cfg(test)]` item is
skipped to its closing brace, and the file of a `#[cfg(test)] mod x;` is a
test module, read not at all), maps it to the file that defines the module,
and fails when files import each other in a circle, or when a file under a
directory named in --rule imports from outside that directory and the
modules it allows.

--layers reads the numbered layer list of a crate's doc comment (`//! 1.
`error`, `id`: ...`): every top-level module must be in one layer, and
none may import from a layer above its own. --doc reads the layer table
of an architecture document (`| 1 base | `error` | ...`, a row with an
empty first cell continuing the layer above) and fails unless it lists the
same top-level modules in the same layers as --layers. --report prints the
graph's numbers either way.
"""
import os
import re
import sys


def module_files(src):
    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src)[:-3]
            parts = rel.split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                parts = []
            files[tuple(parts)] = os.path.relpath(path, src)
    return files


def strip_tests(text):
    """Drops `#[cfg(test)]` items (a `mod tests { .. }` or a single item)."""
    out = []
    i = 0
    while True:
        j = text.find("#[cfg(test)]", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        k = j + len("#[cfg(test)]")
        # the item ends at `;` before any `{`, or at the matching `}`
        depth = 0
        while k < len(text):
            c = text[k]
            if c == ";" and depth == 0:
                k += 1
                break
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    k += 1
                    break
            k += 1
        i = k
    return "".join(out)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = tree.strip()
    m = re.match(r"^([\w:]*?)(::)?\{(.*)\}$", tree, flags=re.S)
    if not m:
        return [re.sub(r"\s+as\s+\w+$", "", tree)]
    prefix, inner = m.group(1), m.group(3)
    parts, depth, cur = [], 0, ""
    for c in inner:
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += c == "{"
        depth -= c == "}"
        cur += c
    parts.append(cur)
    result = []
    for p in parts:
        if p.strip():
            for sub in expand_use(p):
                result.append(prefix + "::" + sub if prefix else sub)
    return result


def paths_of(text):
    found = []
    for m in re.finditer(r"\buse\s+crate::([^;]*);", text, flags=re.S):
        found += expand_use(m.group(1))
    body = re.sub(r"\buse\s+crate::[^;]*;", "", text, flags=re.S)
    found += [m.group(1) for m in re.finditer(r"\bcrate::((?:\w+::)*\w+)", body)]
    return found


def resolve(files, path):
    parts = tuple(p for p in path.split("::") if p and p != "self")
    for n in range(len(parts), 0, -1):
        if parts[:n] in files:
            return parts[:n]
    return None


def test_modules(src, files):
    """Modules declared `#[cfg(test)] mod x;`, and everything below them."""
    declared = set()
    for mod, rel in files.items():
        with open(os.path.join(src, rel)) as f:
            text = strip_comments(f.read())
        for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([\w:]+\))?\s+)?mod\s+(\w+)\s*;", text):
            declared.add(mod + (m.group(1),))
    return {m for m in files if any(m[: len(d)] == d for d in declared)}


def graph(src):
    files = module_files(src)
    tests = test_modules(src, files)
    files = {m: rel for m, rel in files.items() if m not in tests}
    edges = {m: set() for m in files}
    for mod, rel in files.items():
        with open(os.path.join(src, rel)) as f:
            text = strip_tests(strip_comments(f.read()))
        for path in paths_of(text):
            target = resolve(files, path)
            if target is not None and target != mod and target != ():
                edges[mod].add(target)
    return files, edges


def circles(edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
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
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def lib_layers(path):
    """[(number, [top-level modules])] from a doc comment's numbered list."""
    items, cur = [], None
    with open(path) as f:
        for line in f:
            if not line.startswith("//!"):
                continue
            text = line[3:].strip()
            m = re.match(r"^(\d+)\.\s+(.*)$", text)
            if m:
                cur = [int(m.group(1)), m.group(2)]
                items.append(cur)
            elif cur is not None and text:
                cur[1] += " " + text
            else:
                cur = None
    return [(n, re.findall(r"`(\w+)`", body.split(":")[0])) for n, body in items]


def doc_layers(path):
    """[(number, [top-level modules])] from a markdown table whose first
    cell is `N name` (or empty: the layer above) and second `module`s."""
    layers = []
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 2 or not line.startswith("|"):
                continue
            m = re.match(r"^(\d+)\b", cells[0])
            if m:
                layers.append((int(m.group(1)), []))
            elif cells[0] or not layers:
                continue
            for mod in re.findall(r"`([\w:]+)`", cells[1]):
                top = mod.split("::")[0]
                if top not in layers[-1][1]:
                    layers[-1][1].append(top)
    return layers


def check_layers(edges, layers):
    """Messages for modules in no layer and imports from a layer above."""
    level = {m: n for n, mods in layers for m in mods}
    bad = []
    for top in sorted({m[0] for m in edges if m}):
        if top not in level:
            bad.append(f"{top} is in no layer of the crate's list")
    for mod, targets in sorted(edges.items()):
        if not mod or mod[0] not in level:
            continue
        for t in sorted(targets):
            if t and t[0] in level and level[t[0]] > level[mod[0]]:
                bad.append(
                    f"{name(mod)} (layer {level[mod[0]]}) imports {name(t)} (layer {level[t[0]]}): a layer above its own"
                )
    return bad


def same_layers(lib, doc):
    """Messages where two layer lists differ."""
    norm = lambda layers: [(n, sorted(mods)) for n, mods in layers]
    if norm(lib) == norm(doc):
        return []
    out = ["the crate's layer list and the document's layer table differ:"]
    for n in sorted({n for n, _ in lib} | {n for n, _ in doc}):
        a = sorted(next((m for k, m in lib if k == n), []))
        b = sorted(next((m for k, m in doc if k == n), []))
        if a != b:
            out.append(f"  layer {n}: crate {', '.join(a) or '-'}; document {', '.join(b) or '-'}")
    return out


def name(mod):
    return "/".join(mod) or "lib"


def main():
    args = sys.argv[1:]
    src = args[0]
    rules = {}
    report = "--report" in args
    if "--rule" in args:
        for rule in args[args.index("--rule") + 1].split(";"):
            d, allowed = rule.split("=")
            rules[d] = [tuple(a.split("/")) for a in allowed.split(",") if a]
    files, edges = graph(src)
    found = circles(edges)
    bad = False
    if "--layers" in args:
        layers = lib_layers(args[args.index("--layers") + 1])
        problems = check_layers(edges, layers)
        if "--doc" in args:
            problems += same_layers(layers, doc_layers(args[args.index("--doc") + 1]))
        for p in problems:
            bad = True
            print(p)
    if report:
        n_edges = sum(len(e) for e in edges.values())
        in_circles = sum(len(c) for c in found)
        print(f"{src}: {len(files)} files, {n_edges} imports, {in_circles} files in {len(found)} circles")
    for comp in found:
        bad = True
        print(f"import circle among {len(comp)} files: " + ", ".join(name(m) for m in comp))
        members = set(comp)
        for m in comp:
            inner = sorted(name(t) for t in edges[m] if t in members)
            print(f"  {name(m)} -> {', '.join(inner)}")
    for d, allowed in rules.items():
        top = tuple(d.split("/"))
        for mod, targets in edges.items():
            if mod[: len(top)] != top:
                continue
            for t in sorted(targets):
                if t[: len(top)] == top or any(t[: len(a)] == a for a in allowed):
                    continue
                bad = True
                print(f"{name(mod)} imports {name(t)}: {d}/ may import only itself and {', '.join(name(a) for a in allowed)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
