#!/usr/bin/env python3
"""Where the accuracy a hardened model still loses under weight faults comes from (not CI).

For a fixture of fixtures/precision/ (float16 or int8 QDQ) and its hardened model, it draws
fault patterns over every stored word of the hardened model (each bit flips with probability
--ber, as `fitact-onnx evaluate` does: float16 words as float16, int8/uint8/int32 words as
integers, float32 scales as float32), measures the accuracy lost on --images test images, and,
in every pattern that loses more than --threshold points, runs each of its large flips alone
(a float moved by more than x4 either way, or to inf/NaN; an integer moved by more than 4 times
the largest magnitude in its tensor) to name the flips that cost it. A pattern's loss is split over its large flips in
proportion to their own losses; what the large flips alone do not explain is "small flips /
interactions". The tables group the loss by the stored type and the op that uses the flipped
tensor, and by bit.

usage: python3 benches/unrecovered_loss.py --fixture mobilenetv3_fp16 [--hardened H.onnx]
       [--ber 1e-4] [--trials 30] [--images 500] [--seed 11] [--json OUT.json]
Without --hardened it hardens the fixture with target/release/fitact-onnx (channel, zero).
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECISION = os.path.join(ROOT, "fixtures", "precision")
WORD = {np.float16: np.uint16, np.float32: np.uint32, np.int8: np.uint8, np.uint8: np.uint8,
        np.int32: np.uint32}


def harden(src, dst, calib):
    binary = os.path.join(ROOT, "target", "release", "fitact-onnx")
    subprocess.run([binary, "harden", src, dst, "--calib", calib], check=True, capture_output=True)


def calib_for(fixture):
    fp16 = os.path.join(PRECISION, "calib_fp16.npy")
    return fp16 if fixture.endswith("fp16") and os.path.exists(fp16) else os.path.join(ROOT, "fixtures", "calib.npy")


class Model:
    """A model whose initializers can be flipped in their stored words, run in onnxruntime."""

    def __init__(self, path, x, y):
        self.proto = onnx.load(path)
        self.x, self.y = x, y
        self.tensors = {t.name: numpy_helper.to_array(t) for t in self.proto.graph.initializer}
        self.names = [n for n, a in self.tensors.items() if a.dtype.type in WORD and a.size > 0]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.options = options
        self.input = self.proto.graph.input[0].name
        self.clean = self.accuracy({})

    def run_with(self, values):
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        for t in proto.graph.initializer:
            if t.name in values:
                t.CopyFrom(numpy_helper.from_array(values[t.name], t.name))
        session = ort.InferenceSession(proto.SerializeToString(), self.options, providers=["CPUExecutionProvider"])
        out = session.run(None, {self.input: self.x})[0]
        return np.argmax(out.reshape(len(self.x), -1), axis=1)

    def accuracy(self, flips):
        """Top-1 accuracy with `flips` [(tensor, element, bit)] applied to the stored words."""
        values = {}
        for name, element, bit in flips:
            if name not in values:
                values[name] = self.tensors[name].copy()
            words = values[name].reshape(-1).view(WORD[values[name].dtype.type])
            words[element] ^= words.dtype.type(1 << bit)
        return float(np.mean(self.run_with(values) == self.y))

    def draw(self, ber, rng):
        """Each bit of each stored word flips with probability `ber`."""
        flips = []
        for name in self.names:
            a = self.tensors[name]
            bits = a.dtype.itemsize * 8
            count = rng.binomial(a.size * bits, ber)
            for position in rng.choice(a.size * bits, size=count, replace=False):
                flips.append((name, int(position // bits), int(position % bits)))
        return flips

    def moved(self, flip):
        """The flip's value before and after, and whether it is large."""
        name, element, bit = flip
        a = self.tensors[name].reshape(-1)
        before = a[element].copy()
        after = np.array([before]).view(WORD[a.dtype.type])
        after ^= after.dtype.type(1 << bit)
        after = after.view(a.dtype)[0]
        if a.dtype.kind == "f":
            b, f = float(before), float(after)
            ratio = abs(f) / abs(b) if b != 0 else (np.inf if abs(f) > 1e-3 else 1.0)
            large = not np.isfinite(f) or ratio > 4 or ratio < 0.25
        else:
            largest = max(int(np.abs(a.astype(np.int64)).max()), 1)
            large = abs(int(after) - int(before)) > 4 * largest
        return float(before), float(after), bool(large)


def consumers(proto):
    """Tensor name -> the op types reading it."""
    read = collections.defaultdict(list)
    for node in proto.graph.node:
        for i in node.input:
            read[i].append(node.op_type)
    return read


def describe(proto, name, read):
    """The op types that use a flipped tensor (through DequantizeLinear and Cast)."""
    ops = read.get(name, [])
    while ops and all(op in ("DequantizeLinear", "Cast") for op in ops):
        outputs = [o for n in proto.graph.node if name in n.input for o in n.output]
        if not outputs:
            break
        name = outputs[0]
        ops = read.get(name, [])
    return "+".join(sorted(set(ops))) or "output"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixture", required=True)
    p.add_argument("--hardened")
    p.add_argument("--ber", type=float, default=1e-4)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--threshold", type=float, default=1.0, help="points a pattern must lose to be attributed")
    p.add_argument("--json")
    args = p.parse_args()

    x = np.load(os.path.join(ROOT, "fixtures", "test.npy"))[:args.images].astype(np.float32)
    y = np.load(os.path.join(ROOT, "fixtures", "test_labels.npy"))[:args.images]
    src = os.path.join(PRECISION, f"{args.fixture}.onnx")
    hardened = args.hardened
    if hardened is None:
        hardened = os.path.join(tempfile.mkdtemp(), "hardened.onnx")
        harden(src, hardened, calib_for(args.fixture))
    model = Model(hardened, x, y)
    read = consumers(model.proto)
    rng = np.random.default_rng(args.seed)
    by_feed = collections.Counter()
    by_bit = collections.Counter()
    worst = []
    losses = []
    for trial in range(args.trials):
        flips = model.draw(args.ber, rng)
        loss = 100 * (model.clean - model.accuracy(flips))
        losses.append(loss)
        if loss <= args.threshold:
            continue
        large = [f for f in flips if model.moved(f)[2]]
        own = [max(0.0, 100 * (model.clean - model.accuracy([f]))) for f in large]
        explained = sum(own)
        for f, l in zip(large, own):
            if l <= 0:
                continue
            share = loss * l / max(explained, loss)
            before, after, _ = model.moved(f)
            key = f"{model.tensors[f[0]].dtype.name} -> {describe(model.proto, f[0], read)}"
            by_feed[key] += share / args.trials
            by_bit[(model.tensors[f[0]].dtype.name, f[2])] += share / args.trials
            worst.append({"trial": trial, "tensor": f[0], "element": f[1], "bit": f[2], "before": before,
                          "after": after, "alone": l, "feeds": key})
        rest = loss - min(explained, loss)
        by_feed["small flips / interactions"] += rest / args.trials
        print(f"trial {trial}: lost {loss:.1f} points, {len(flips)} flips, {len(large)} large, alone {explained:.1f}",
              file=sys.stderr, flush=True)
    mean = float(np.mean(losses))
    print(f"{args.fixture} hardened: clean {100 * model.clean:.1f}%, mean loss {mean:.2f} points at BER {args.ber} "
          f"({args.trials} patterns, {args.images} images)")
    print("\n| what the flipped tensor feeds | points lost (mean per pattern) |\n|---|---|")
    for key, v in by_feed.most_common():
        print(f"| {key} | {v:.2f} |")
    print("\n| stored type, bit | points lost |\n|---|---|")
    for key, v in by_bit.most_common(12):
        print(f"| {key[0]} bit {key[1]} | {v:.2f} |")
    worst.sort(key=lambda w: -w["alone"])
    print("\nlargest single flips:")
    for w in worst[:15]:
        print(f"  {w['alone']:.1f} points: {w['tensor']}[{w['element']}] bit {w['bit']}: {w['before']:.4g} -> "
              f"{w['after']:.4g} ({w['feeds']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "clean": model.clean, "losses": losses, "by_feed": dict(by_feed),
                       "by_bit": {f"{k[0]} bit {k[1]}": v for k, v in by_bit.items()}, "flips": worst}, f, indent=1)


if __name__ == "__main__":
    main()
