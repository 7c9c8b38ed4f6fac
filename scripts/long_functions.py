#!/usr/bin/env python3
"""Lists every Rust function (and every enum or struct) longer than a limit, 100 lines by default.

Usage: scripts/long_functions.py [--limit N] [PATH ...]   (default paths: src passes/src)

A function is counted from its `fn` line to the line of its closing brace; the brace depth is
followed through the code with strings, chars and comments skipped. An item whose doc comment
or the line above it contains `long-function:` (saying why it must be one piece) is listed as
allowed instead. Exits 1 when an item over the limit is not allowed, 0 otherwise.
"""
import argparse
import pathlib
import re
import sys

ITEM = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+|async\s+|unsafe\s+|extern\s+\"[^\"]*\"\s+)*"
                  r"(fn|enum|struct)\s+([A-Za-z_][A-Za-z0-9_]*)")


def code_only(line, state):
    """The line with strings, chars and comments blanked; `state` carries block comments and
    raw/plain strings across lines."""
    out = []
    i = 0
    while i < len(line):
        if state["block"]:
            end = line.find("*/", i)
            if end < 0:
                return "".join(out), state
            state["block"] = False
            i = end + 2
            continue
        if state["string"] is not None:
            closing = state["string"]
            if closing == '"':
                if line[i] == "\\":
                    i += 2
                    continue
                if line[i] == '"':
                    state["string"] = None
                i += 1
                continue
            end = line.find(closing, i)
            if end < 0:
                return "".join(out), state
            state["string"] = None
            i = end + len(closing)
            continue
        c = line[i]
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"] = True
            i += 2
            continue
        raw = re.match(r'b?r(#*)"', line[i:])
        if raw and (i == 0 or not (line[i - 1].isalnum() or line[i - 1] == "_")):
            state["string"] = '"' + raw.group(1)
            i += raw.end()
            continue
        if c == '"':
            state["string"] = '"'
            i += 1
            continue
        char = re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'", line[i:])
        if char:
            i += char.end()
            continue
        out.append(c)
        i += 1
    return "".join(out), state


def items(path):
    lines = path.read_text().splitlines()
    state = {"block": False, "string": None}
    open_items = []  # (name, kind, start line, depth at start, allowed)
    depth = 0
    for number, line in enumerate(lines, 1):
        code, state = code_only(line, state)
        match = ITEM.match(code)
        if match:
            kind, name = match.groups()
            above = "\n".join(lines[max(0, number - 12):number - 1])
            doc = above.split("\n\n")[-1]
            allowed = "long-function:" in doc
            open_items.append([name, kind, number, depth, allowed, False])
        for c in code:
            if c == "{":
                depth += 1
                for item in open_items:
                    if not item[5] and depth == item[3] + 1:
                        item[5] = True
            elif c == "}":
                depth -= 1
                for item in list(open_items):
                    if item[5] and depth == item[3]:
                        open_items.remove(item)
                        yield item[0], item[1], item[2], number, item[4]
        if code.rstrip().endswith(";"):
            # a declaration without a body (`fn f();`, `struct S;`, `struct T(u8);`)
            for item in list(open_items):
                if not item[5] and depth == item[3]:
                    open_items.remove(item)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("paths", nargs="*", default=["src", "passes/src"])
    args = parser.parse_args()
    root = pathlib.Path(__file__).resolve().parent.parent
    files = []
    for p in args.paths:
        p = pathlib.Path(p) if pathlib.Path(p).is_absolute() else root / p
        files += sorted(p.rglob("*.rs")) if p.is_dir() else [p]
    failing = 0
    for path in files:
        for name, kind, start, end, allowed in items(path):
            length = end - start + 1
            if length > args.limit:
                verdict = "allowed (long-function: comment)" if allowed else "TOO LONG"
                failing += not allowed
                print(f"{path.relative_to(root)}:{start}: {kind} {name}: {length} lines, {verdict}")
    print(f"{failing} item(s) over {args.limit} lines without a reason")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
