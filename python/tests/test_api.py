"""The Python package, installed in a fresh venv with `pip install .` (scripts/test_python):
the API against the CLI on the shipped fixtures.

FITACT_CLI names the CLI binary to compare with (the suite's target/debug/fitact-onnx); without
it, the venv's `fitact-onnx` script is used.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

import fitact_onnx

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
MODEL = FIXTURES / "alexnet.onnx"
VENV_CLI = Path(sys.executable).parent / "fitact-onnx"
CLI = os.environ.get("FITACT_CLI") or str(VENV_CLI)
# 128 calibration samples keep the debug build of the suite quick.
CALIB = np.load(FIXTURES / "calib.npy")[:128]
TEST = np.load(FIXTURES / "test.npy")[:64]
TEST_LABELS = np.load(FIXTURES / "test_labels.npy")[:64]


def onnxruntime_library():
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    return str(sorted(capi.glob("libonnxruntime.so*"))[-1])


def cli(*args, check=True):
    """The CLI binary on `args`, with the library of this venv's onnxruntime."""
    env = dict(os.environ, ORT_DYLIB_PATH=onnxruntime_library())
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, env=env, check=check)


@pytest.fixture(scope="module")
def calib_npy(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "calib.npy"
    np.save(path, CALIB)
    return path


def test_version_runs_from_the_venv_bin():
    done = subprocess.run([str(VENV_CLI), "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"fitact-onnx {fitact_onnx.__version__}"


@pytest.mark.parametrize("engine", ["tract", "onnxruntime"])
def test_harden_equals_the_cli_byte_for_byte(tmp_path, calib_npy, engine):
    cli("harden", MODEL, tmp_path / "cli.onnx", "--calib", calib_npy, "--engine", engine,
        "--report", tmp_path / "cli.json", "-q")
    hardened, report = fitact_onnx.harden(
        onnx.load(MODEL), calib=CALIB, engine=engine, output=tmp_path / "api.onnx", quiet=True
    )
    expected = (tmp_path / "cli.onnx").read_bytes()
    assert (tmp_path / "api.onnx").read_bytes() == expected
    assert hardened.SerializeToString() == expected
    theirs = json.loads((tmp_path / "cli.json").read_text())
    assert report["engine"] == theirs["engine"] and report["engine"]["name"] == engine
    assert report["activations"] == theirs["activations"]
    assert report["input"] == "<in memory>"


def test_a_calibration_data_reader_and_a_dict_give_the_same_model():
    class Reader:
        """As onnxruntime.quantization.CalibrationDataReader: one feed per call, then None."""

        def __init__(self):
            self.batches = iter(np.array_split(CALIB, 10))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    from_array, _ = fitact_onnx.harden(str(MODEL), calib=CALIB, engine="tract", quiet=True)
    from_reader, report = fitact_onnx.harden(MODEL.read_bytes(), calib=Reader(), engine="tract", quiet=True)
    from_dict, _ = fitact_onnx.harden(MODEL, calib={"input": CALIB}, engine="tract", quiet=True)
    assert report["calibration"]["samples"] == len(CALIB)
    assert from_reader.SerializeToString() == from_array.SerializeToString()
    assert from_dict.SerializeToString() == from_array.SerializeToString()


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="expected a numpy array"):
        fitact_onnx.harden(MODEL, calib=42)
    with pytest.raises(ValueError, match="expected an onnx.ModelProto"):
        fitact_onnx.harden(3.5, calib=CALIB)
    with pytest.raises(ValueError, match="invalid value 'magic'"):
        fitact_onnx.harden(MODEL, calib=CALIB, method="magic")
    # As on the command line, --budget needs --search.
    with pytest.raises(ValueError, match="--search"):
        fitact_onnx.harden(MODEL, calib=CALIB, budget="1%")
    with pytest.raises(ValueError, match="list of models"):
        fitact_onnx.evaluate(MODEL, data=TEST)


def test_an_error_while_running_is_a_fitact_error_with_the_cli_line(tmp_path):
    wrong = np.zeros((4, 3, 28, 28), dtype=np.float32)
    np.save(tmp_path / "wrong.npy", wrong)
    line = cli("harden", MODEL, tmp_path / "out.onnx", "--calib", tmp_path / "wrong.npy", check=False)
    assert line.returncode == 2
    with pytest.raises(fitact_onnx.FitactError) as raised:
        fitact_onnx.harden(MODEL, calib=tmp_path / "wrong.npy")
    assert line.stderr.strip().splitlines()[-1] == f"error: {raised.value}"
    assert not isinstance(raised.value, ValueError)


def test_inspect_lists_what_the_cli_lists():
    theirs = json.loads(cli("inspect", MODEL, "--json").stdout)
    ours = fitact_onnx.inspect(onnx.load(MODEL))
    assert ours["activations"] == theirs["activations"]
    assert ours["model"] == "<in memory>"
    with pytest.raises(ValueError, match="activations"):
        fitact_onnx.inspect(MODEL, activations=["nonsense"])


def test_evaluate_check_and_merge(tmp_path):
    hardened, _ = fitact_onnx.harden(MODEL, calib=CALIB, quiet=True)
    models = [onnx.load(MODEL), hardened]
    options = dict(data=TEST, labels=TEST_LABELS, ber=[1e-5], trials=4, seed=7, quiet=True)
    campaign = fitact_onnx.evaluate(models, **options)
    assert [m["model"] for m in campaign["models"]] == ["<in memory>"] * 2
    shards = [fitact_onnx.evaluate(models, shard=f"{k}/2", **options) for k in range(2)]
    merged = fitact_onnx.merge(shards)
    assert merged["results"] == campaign["results"]
    gate = fitact_onnx.check(hardened, reference=MODEL, data=TEST, labels=TEST_LABELS,
                             max_accuracy_drop="5%", quiet=True)
    assert gate["passed"] is True and gate["reference"] == str(MODEL)


def test_the_onnxruntime_of_this_interpreter_is_found_without_python3_on_path(tmp_path):
    # No python3 on PATH and no ORT_DYLIB_PATH: the package this interpreter imports is used.
    script = (
        "import numpy as np, fitact_onnx\n"
        f"_, r = fitact_onnx.harden({str(MODEL)!r}, calib=np.load({str(FIXTURES / 'calib.npy')!r})[:16],"
        " engine='onnxruntime', quiet=True)\n"
        "print(r['engine']['name'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ORT_DYLIB_PATH"}
    env["PATH"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "onnxruntime"


def test_the_gil_is_released_while_a_command_runs():
    ticks = []
    done = threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.005)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        start = time.monotonic()
        fitact_onnx.harden(MODEL, calib=np.concatenate([CALIB] * 4), engine="tract", quiet=True)
        end = time.monotonic()
    finally:
        done.set()
        ticker.join()
    during = [t for t in ticks if start < t < end]
    # Held, the GIL would let the ticker in only while Python writes and reads the files.
    assert len(during) >= 0.25 * (end - start) / 0.005, (len(during), end - start)
