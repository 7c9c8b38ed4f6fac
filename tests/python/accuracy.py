"""Top-1 accuracy of each model on samples, in onnxruntime (one thread), as JSON.

usage: accuracy.py DATA.npy LABELS.npy MODEL.onnx [MODEL.onnx ...]
prints {"MODEL.onnx": accuracy, ...} (accuracy in [0, 1]).
"""
import json
import sys

import numpy as np
import onnxruntime as ort


def accuracy(path, x, y):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: x[i:i + 250]})[0] for i in range(0, len(x), 250)])
    return float((logits.argmax(axis=1) == y).mean())


def main():
    data, labels, *models = sys.argv[1:]
    x, y = np.load(data), np.load(labels)
    print(json.dumps({m: accuracy(m, x, y) for m in models}))


if __name__ == "__main__":
    main()
