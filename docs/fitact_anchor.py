"""FitAct's own gradient training of activation bounds, reimplemented in PyTorch (the "anchor").

FitAct (Ghavami et al., DATE 2022) replaces each ReLU by the bounded activation

    y - y * sigmoid(k * (y - b)),   y = relu(x)

with a bound b per neuron (or per channel), initialises b at the maximum activation seen on the
training data and then trains b alone, weights frozen, on

    cross-entropy + c * mean(b^2)

The defaults, k = 20, c = 4e-11, Adam with lr = 1e-3 and 100 epochs (batch size 64), are the
ones of the ProAct authors' re-implementation of FitAct (Mousavi et al., 2024). Their public
toolbox (reliable-relu-toolbox, search_bound/fitact.py) differs in details this script does not
copy: 150 epochs, a cosine learning-rate schedule, and 4e-9 * the sum over layers of each
layer's mean(b^2).

Here the model is an ONNX file, interpreted node by node as a torch module with frozen weights
(checked against onnxruntime on 64 calibration samples at start). The training data is the
first --samples rows of fixtures/calib.npy with fixtures/calib_labels.npy, the same samples
`fitact-onnx harden --search` gets, so the two ways of fitting bounds can be compared.

The trained bounds are written as JSON (format "fitact-onnx-bounds", version 1), which
`fitact-onnx harden MODEL OUT --bounds FILE` turns into a hardened ONNX model; this script
writes no ONNX itself. One summary line reports the clean accuracy on fixtures/test.npy of the
model with the trained bounds applied hard (relu, then 0 above b, as the hardened ONNX does)
next to the original's.

Needs torch, numpy, onnx and onnxruntime (not part of the project's tests or CI):

    python3 -m venv ../torch-venv
    ../torch-venv/bin/pip install torch numpy onnx onnxruntime
    ../torch-venv/bin/python docs/fitact_anchor.py fixtures/alexnet.onnx \\
        --granularity channel --samples 512 --out /tmp/alexnet.bounds.json
    fitact-onnx harden fixtures/alexnet.onnx /tmp/alexnet.fitact.onnx --calib fixtures/calib.npy \\
        --bounds /tmp/alexnet.bounds.json
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
import torch.nn.functional as F
from onnx import numpy_helper

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SELF_CHECK_SAMPLES = 64
SELF_CHECK_TOLERANCE = 1e-4
EVAL_BATCH = 500


def fail(message):
    sys.exit(f"error: {message}")


def spatial_padding(attrs, node_name, rank):
    """Symmetric ONNX `pads` as torch's per-axis padding; anything else is an error."""
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        fail(f"node {node_name}: auto_pad is not supported (give explicit pads)")
    pads = attrs.get("pads", [0] * 2 * rank)
    if pads[:rank] != pads[rank:]:
        fail(f"node {node_name}: asymmetric pads {pads} are not supported")
    return pads[:rank]


def conv(attrs, name, x, w, b=None):
    rank = w.ndim - 2
    conv_nd = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    return conv_nd(
        x,
        w,
        b,
        stride=attrs.get("strides", [1] * rank),
        padding=spatial_padding(attrs, name, rank),
        dilation=attrs.get("dilations", [1] * rank),
        groups=attrs.get("group", 1),
    )


def max_pool(attrs, name, x):
    kernel = attrs["kernel_shape"]
    rank = len(kernel)
    pool_nd = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]
    return pool_nd(
        x,
        kernel,
        stride=attrs.get("strides", [1] * rank),
        padding=spatial_padding(attrs, name, rank),
        dilation=attrs.get("dilations", [1] * rank),
        ceil_mode=bool(attrs.get("ceil_mode", 0)),
    )


def gemm(attrs, name, a, b, c=None):
    a = a.T if attrs.get("transA", 0) else a
    b = b.T if attrs.get("transB", 0) else b
    y = attrs.get("alpha", 1.0) * (a @ b)
    return y if c is None else y + attrs.get("beta", 1.0) * c


def batch_normalization(attrs, name, x, scale, bias, mean, var):
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=attrs.get("epsilon", 1e-5))


def flatten(attrs, name, x):
    axis = attrs.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), -1)


def reshape(attrs, name, x, shape):
    dims = shape.tolist()
    if not attrs.get("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def global_average_pool(attrs, name, x):
    return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)


def add(attrs, name, a, b):
    return a + b


OPS = {
    "Conv": conv,
    "MaxPool": max_pool,
    "Gemm": gemm,
    "BatchNormalization": batch_normalization,
    "Flatten": flatten,
    "Reshape": reshape,
    "GlobalAveragePool": global_average_pool,
    "Add": add,
}


class OnnxInterpreter(torch.nn.Module):
    """An ONNX graph run node by node; weights are buffers. `forward(x, on_relu)` passes each
    Relu's output y = relu(x) through `on_relu(node_name, y)` (identity when None)."""

    def __init__(self, graph):
        super().__init__()
        check_supported(graph)
        self.input_name = graph.input[0].name
        self.output_name = graph.output[0].name
        self.weight_keys = {}
        for i, init in enumerate(graph.initializer):
            key = f"w{i}"
            self.register_buffer(key, torch.from_numpy(numpy_helper.to_array(init).copy()))
            self.weight_keys[init.name] = key
        self.nodes = [
            (
                node.op_type,
                node.name,
                list(node.input),
                node.output[0],
                {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute},
            )
            for node in graph.node
        ]
        self.relu_names = [name for op, name, *_ in self.nodes if op == "Relu"]

    def value(self, env, name):
        if name == "":
            return None
        if name in env:
            return env[name]
        return getattr(self, self.weight_keys[name])

    def forward(self, x, on_relu=None):
        env = {self.input_name: x}
        for op, name, inputs, output, attrs in self.nodes:
            args = [self.value(env, i) for i in inputs]
            if op == "Relu":
                y = torch.relu(args[0])
                env[output] = y if on_relu is None else on_relu(name, y)
            else:
                env[output] = OPS[op](attrs, name, *args)
        return env[self.output_name]


def check_supported(graph):
    if len(graph.input) - len(graph.initializer) > 1 or len(graph.output) != 1:
        fail("only models with one data input and one output are supported")
    for node in graph.node:
        if node.op_type != "Relu" and node.op_type not in OPS:
            supported = ", ".join(sorted([*OPS, "Relu"]))
            fail(f"unsupported ONNX op {node.op_type} (node {node.name!r}); supported: {supported}")
        if node.op_type == "Relu" and not node.name:
            fail(f"Relu node with output {node.output[0]!r} has no name; bounds are keyed by name")


def self_check(model_path, model, calib, threads):
    """Exit unless the interpreter's logits equal onnxruntime's to SELF_CHECK_TOLERANCE."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    batch = calib[:SELF_CHECK_SAMPLES]
    reference = session.run(None, {model.input_name: batch.numpy()})[0]
    with torch.no_grad():
        ours = model(batch).numpy()
    diff = float(np.abs(ours - reference).max())
    if diff > SELF_CHECK_TOLERANCE:
        fail(f"self-check failed: max |torch - onnxruntime| = {diff:.3g} > {SELF_CHECK_TOLERANCE}")
    print(f"self-check passed: max |torch - onnxruntime| = {diff:.3g} on {len(batch)} samples")


def neuron_maxima(model, images):
    """Per Relu node, the maximum of each neuron over `images` (one sample's shape)."""
    maxima = {}

    def record(name, y):
        batch_max = y.amax(dim=0)
        maxima[name] = batch_max if name not in maxima else torch.maximum(maxima[name], batch_max)
        return y

    with torch.no_grad():
        for batch in images.split(EVAL_BATCH):
            model(batch, record)
    return maxima


def reduce_to_granularity(neuron_max, granularity):
    """[C,H,W] maxima to [C,1,1] per channel; [F] stays [F]; per neuron nothing changes."""
    if granularity == "channel" and neuron_max.ndim >= 2:
        return neuron_max.amax(dim=tuple(range(1, neuron_max.ndim)), keepdim=True)
    return neuron_max


def initial_bounds(model, images, granularity):
    maxima = neuron_maxima(model, images)
    return {
        name: torch.nn.Parameter(reduce_to_granularity(maxima[name], granularity).clone())
        for name in model.relu_names
    }


def soft_bounded(bounds, k):
    """FitAct's trainable form: y - y * sigmoid(k * (y - b))."""
    return lambda name, y: y - y * torch.sigmoid(k * (y - bounds[name]))


def hard_bounded(bounds):
    """What the hardened ONNX computes: y, zeroed where it exceeds b."""
    return lambda name, y: torch.where(y > bounds[name], torch.zeros_like(y), y)


def bound_penalty(bounds):
    return torch.cat([b.flatten() for b in bounds.values()]).pow(2).mean()


def train_bounds(model, bounds, images, labels, args):
    """Adam on the bounds alone: cross-entropy + c * mean(b^2), shuffled minibatches."""
    optimizer = torch.optim.Adam(list(bounds.values()), lr=args.lr)
    activation = soft_bounded(bounds, args.k)
    for _ in range(args.epochs):
        order = torch.randperm(len(images))
        for idx in order.split(args.batch_size):
            logits = model(images[idx], activation)
            loss = F.cross_entropy(logits, labels[idx]) + args.c * bound_penalty(bounds)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def clamp_negative(bounds):
    """Bounds below 0 set to 0; returns how many there were."""
    with torch.no_grad():
        clamped = sum(int((b < 0).sum()) for b in bounds.values())
        for b in bounds.values():
            b.clamp_(min=0.0)
    return clamped


def accuracy(model, images, labels, on_relu=None):
    with torch.no_grad():
        predictions = torch.cat([model(batch, on_relu).argmax(dim=1) for batch in images.split(EVAL_BATCH)])
    return float((predictions == labels).float().mean())


def mean_bound(bounds):
    return float(torch.cat([b.detach().flatten() for b in bounds.values()]).mean())


def as_float32_list(tensor):
    """Row-major values, each written with the shortest decimal that reads back as the same float32."""
    return [float(str(v)) for v in tensor.detach().numpy().astype(np.float32).ravel()]


def bounds_document(bounds, settings, train_seconds, clamped):
    return {
        "format": "fitact-onnx-bounds",
        "version": 1,
        "source": "docs/fitact_anchor.py",
        "settings": settings,
        "train_seconds": round(train_seconds, 3),
        "clamped": clamped,
        "bounds": [
            {"node": name, "dims": list(b.shape), "high": as_float32_list(b)} for name, b in bounds.items()
        ],
    }


def load_tensor(name):
    return torch.from_numpy(np.load(FIXTURES / name))


def sample_count(text):
    n = int(text)
    if not 64 <= n <= 512:
        raise argparse.ArgumentTypeError(f"{n} is not in 64..512")
    return n


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="ONNX model, e.g. fixtures/alexnet.onnx")
    parser.add_argument("--out", type=Path, required=True, help="bounds JSON to write")
    parser.add_argument("--granularity", choices=["neuron", "channel"], default="channel")
    parser.add_argument("--samples", type=sample_count, default=512, help="first N rows of calib.npy (64..512)")
    parser.add_argument("--k", type=float, default=20.0, help="sigmoid steepness")
    parser.add_argument("--c", type=float, default=4e-11, help="weight of mean(b^2) in the loss")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def main():
    started = time.perf_counter()
    args = parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    model = OnnxInterpreter(onnx.load(str(args.model)).graph)
    calib = load_tensor("calib.npy")
    self_check(args.model, model, calib, args.threads)
    images, labels = calib[: args.samples], load_tensor("calib_labels.npy")[: args.samples]

    bounds = initial_bounds(model, images, args.granularity)
    initial_mean = mean_bound(bounds)
    train_started = time.perf_counter()
    train_bounds(model, bounds, images, labels, args)
    train_seconds = time.perf_counter() - train_started
    clamped = clamp_negative(bounds)

    settings = {
        "granularity": args.granularity,
        "k": args.k,
        "c": args.c,
        "lr": args.lr,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "samples": args.samples,
        "seed": args.seed,
        "threads": args.threads,
    }
    args.out.write_text(json.dumps(bounds_document(bounds, settings, train_seconds, clamped)) + "\n")

    test, test_labels = load_tensor("test.npy"), load_tensor("test_labels.npy")
    original = accuracy(model, test, test_labels)
    hard = accuracy(model, test, test_labels, hard_bounded(bounds))
    print(
        f"{args.model.stem} granularity={args.granularity} samples={args.samples}"
        f" mean_bound={mean_bound(bounds):.4g} mean_initial={initial_mean:.4g}"
        f" ratio={mean_bound(bounds) / initial_mean:.4f} clamped={clamped}"
        f" train_seconds={train_seconds:.1f} total_seconds={time.perf_counter() - started:.1f}"
        f" acc_hard={hard:.2%} acc_original={original:.2%} -> {args.out}"
    )


if __name__ == "__main__":
    main()
