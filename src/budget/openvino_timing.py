"""Times ONNX models in OpenVINO for `harden --max-overhead --runtime openvino` (run by the
fitact-onnx binary, which embeds this file; not a module).

    python3 -c SCRIPT MIN,MAX,SETTLED MIN_ROUND_SECONDS INPUTS.json MODEL.onnx...

INPUTS.json: [{"name": ..., "shape": [...], "file": raw float32 little-endian}], one per
model input. CPU plugin, INFERENCE_NUM_THREADS 1, PERFORMANCE_HINT LATENCY, NUM_STREAMS 1,
INFERENCE_PRECISION_HINT f32 (benches/deployment.py's settings). The models are compiled
together, warmed up, then run in interleaved rounds (order rotated per round; at least MIN,
and up to MAX while some model's fastest run still improves by more than SETTLED over the
last MIN // 2 rounds, as src/budget/cost.rs does), each enough times to take MIN_ROUND_SECONDS; a run is timed in CPU time of the process (OpenVINO
runs a request on a worker thread of its own; the other threads are idle meanwhile). Prints one JSON object: {"version": ..., "times":
[[fastest run's seconds, per model] per round]}. Exit 2 with one line on stderr when openvino is
missing or a model does not compile.
"""
import json
import sys
import time

try:
    import numpy as np
    import openvino as ov
except ImportError as e:
    print(f"--runtime openvino needs the openvino Python package for python3 (pip install openvino): {e}",
          file=sys.stderr)
    sys.exit(2)


def main():
    low, high, settled = sys.argv[1].split(",")
    low, high, settled = int(low), int(high), float(settled)
    min_time, inputs_path = float(sys.argv[2]), sys.argv[3]
    paths = sys.argv[4:]
    with open(inputs_path) as f:
        inputs = json.load(f)
    feeds = {i["name"]: np.fromfile(i["file"], dtype="<f4").reshape(i["shape"]) for i in inputs}
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": "1", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
              "INFERENCE_PRECISION_HINT": "f32"}
    runners = []
    for path in paths:
        try:
            model = core.read_model(path)
            model.reshape({name: list(x.shape) for name, x in feeds.items()})
            request = core.compile_model(model, "CPU", config).create_infer_request()
        except Exception as e:  # noqa: BLE001 - any failure is the user's one-line error
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"OpenVINO cannot compile {path}: {first}", file=sys.stderr)
            sys.exit(2)
        tensors = {name: ov.Tensor(np.ascontiguousarray(x)) for name, x in feeds.items()}
        runners.append(lambda r=request, t=tensors: r.infer(t))
    for run in runners:
        run()
        run()
    t0 = time.process_time()
    for _ in range(3):
        runners[0]()
    one = (time.process_time() - t0) / 3
    repeats = max(1, min(1000, int(np.ceil(min_time / max(one, 1e-6)))))

    def done(times):
        recent = low // 2
        if len(times) < low:
            return False
        if len(times) >= high:
            return True
        best = lambda rows, m: min(row[m] for row in rows)
        return all(best(times, m) >= best(times[:-recent], m) * (1 - settled) for m in range(len(runners)))

    times = []
    while not done(times):
        r = len(times)
        row = [0.0] * len(runners)
        for k in range(len(runners)):
            m = (k + r) % len(runners)
            fastest = float("inf")
            for _ in range(repeats):
                t0 = time.process_time()
                runners[m]()
                fastest = min(fastest, time.process_time() - t0)
            row[m] = fastest
        times.append(row)
    print(json.dumps({"version": ov.__version__, "times": times}))


main()
