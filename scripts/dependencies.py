#!/usr/bin/env python3
"""Checks that dependencies between the stages of src/ point one way (docs/architecture.md).

Usage: scripts/dependencies.py

Every file of src/ belongs to a stage (its folder, or its own name for check.rs and
model_io.rs; main.rs, the binary, counts with `cli`, the library's command line it calls);
every `crate::STAGE` or `fitact_onnx::STAGE` path in it outside its `#[cfg(test)]` module
(tests may use any stage to build their inputs) must name its own stage or one below it in
LAYERS. Prints the dependencies of each stage, and every path that reaches
up; exits 1 if there is one.
"""
import pathlib
import re
import sys

# Top to bottom; a stage may use itself and the stages after it.
LAYERS = ["cli", "report", "check", "harden", "budget", "search", "faults", "replay", "data", "engine", "model_io"]
# Not stages: the crate root's own items (TOOL, VERSION) and the re-exported passes crate.
ROOT_ITEMS = {"TOOL", "VERSION", "passes"}
PATH = re.compile(r"\b(?:crate|fitact_onnx)::([A-Za-z_]+)")


def stage_of(path, src):
    parts = path.relative_to(src).parts
    if parts[0] == "main.rs":
        return "cli"
    if len(parts) == 1:
        return parts[0].removesuffix(".rs")
    return parts[0]


def main():
    src = pathlib.Path(__file__).resolve().parent.parent / "src"
    uses = {}
    upward = []
    for path in sorted(src.rglob("*.rs")):
        stage = stage_of(path, src)
        if stage == "lib":
            continue
        text = path.read_text()
        text = text.split("#[cfg(test)]\nmod tests")[0]
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("//"):
                continue
            for used in PATH.findall(line):
                if used in ROOT_ITEMS:
                    continue
                uses.setdefault(stage, set()).add(used)
                if used not in LAYERS or LAYERS.index(used) < LAYERS.index(stage):
                    upward.append(f"{path.relative_to(src.parent)}:{number}: {stage} uses {used}")
    for stage in LAYERS:
        print(f"{stage:>9} -> {', '.join(sorted(uses.get(stage, set()) - {stage})) or '(nothing)'}")
    for line in upward:
        print("REACHES UP:", line)
    print(f"{len(upward)} path(s) reaching up")
    return 1 if upward else 0


if __name__ == "__main__":
    sys.exit(main())
