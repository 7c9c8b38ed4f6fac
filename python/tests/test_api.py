"""The Python package, installed in a fresh venv with `pip install .` (scripts/test_python):
the API against the CLI binary the wheel installed in the venv's bin/, on the shipped fixtures.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
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
# 128 calibration samples keep the debug build of the suite quick.
CALIB = np.load(FIXTURES / "calib.npy")[:128]
TEST = np.load(FIXTURES / "test.npy")[:64]
TEST_LABELS = np.load(FIXTURES / "test_labels.npy")[:64]


def cli(*args, check=True, env=None):
    """The venv's CLI binary on `args` (its onnxruntime found as a user's would be)."""
    env = env or {k: v for k, v in os.environ.items() if k != "ORT_DYLIB_PATH"}
    return subprocess.run([str(VENV_CLI), *map(str, args)], capture_output=True, text=True, env=env, check=check)


@pytest.fixture(scope="module")
def calib_npy(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "calib.npy"
    np.save(path, CALIB)
    return path


def test_the_venv_bin_has_the_cli_binary():
    # The binary itself (ELF), not a Python script that runs the command line.
    assert VENV_CLI.read_bytes()[:4] == b"\x7fELF"
    done = subprocess.run([str(VENV_CLI), "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"fitact-onnx {fitact_onnx.__version__}"


def test_the_venv_binary_finds_the_venv_onnxruntime_without_activation(tmp_path):
    # No activated venv, no python3 on PATH, no ORT_DYLIB_PATH: the onnxruntime package
    # installed beside the binary is used.
    import onnxruntime

    env = {"HOME": os.environ.get("HOME", "/"), "PATH": str(tmp_path)}
    done = cli("harden", MODEL, tmp_path / "out.onnx", "--calib", FIXTURES / "calib.npy", "--engine", "onnxruntime",
               "-v", env=env, check=False)
    assert done.returncode == 0, done.stderr
    package = Path(onnxruntime.__file__).parent
    assert f"onnxruntime {onnxruntime.__version__} from {package}/capi/" in done.stderr, done.stderr


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


def test_data_that_does_not_fit_the_model_is_a_value_error_with_the_cli_line(tmp_path):
    wrong = np.zeros((4, 3, 28, 28), dtype=np.float32)
    np.save(tmp_path / "wrong.npy", wrong)
    line = cli("harden", MODEL, tmp_path / "out.onnx", "--calib", tmp_path / "wrong.npy", check=False)
    assert line.returncode == 2
    with pytest.raises(ValueError) as raised:
        fitact_onnx.harden(MODEL, calib=tmp_path / "wrong.npy")
    assert line.stderr.strip().splitlines()[-1] == f"error: {raised.value}"
    assert isinstance(raised.value, fitact_onnx.DataError)
    assert isinstance(raised.value, fitact_onnx.FitactError)
    # The same array in memory: the same line, naming the keyword where the file was named.
    with pytest.raises(fitact_onnx.DataError) as in_memory:
        fitact_onnx.harden(MODEL, calib=wrong)
    assert str(in_memory.value) == str(raised.value).replace(str(tmp_path / "wrong.npy"), "calib")
    # A rank that fits no layout, as numpy users pass it by mistake.
    with pytest.raises(ValueError, match=r"^reading calibration samples: calib: array 'input' has samples of shape \[3, 3\]"):
        fitact_onnx.harden(MODEL, calib=np.zeros((4, 3, 3), np.float32))


def test_an_error_while_running_is_a_fitact_error_with_the_cli_line(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    line = cli("harden", broken, tmp_path / "out.onnx", "--calib", FIXTURES / "calib.npy", check=False)
    assert line.returncode == 2
    with pytest.raises(fitact_onnx.FitactError) as raised:
        fitact_onnx.harden(broken, calib=CALIB)
    assert line.stderr.strip().splitlines()[-1] == f"error: {raised.value}"
    assert not isinstance(raised.value, ValueError)


def test_arrays_reach_the_command_in_memory(monkeypatch):
    def no_file(*args, **kwargs):
        raise AssertionError("an array was written to a file")

    for name in ("save", "savez", "savez_compressed"):
        monkeypatch.setattr(np, name, no_file)
    expected, _ = fitact_onnx.harden(MODEL, calib=CALIB, engine="tract", quiet=True)
    # Any strides and either byte order; integers converted as from a file.
    for calib in (CALIB[::-1][::-1], np.asfortranarray(CALIB), CALIB.astype(">f4")):
        hardened, _ = fitact_onnx.harden(MODEL, calib=calib, engine="tract", quiet=True)
        assert hardened.SerializeToString() == expected.SerializeToString()
    gate = fitact_onnx.check(expected, reference=MODEL, data={"input": TEST}, labels=TEST_LABELS.astype(np.int32),
                             quiet=True)
    assert (gate["samples"], gate["metric"]) == (len(TEST), "accuracy")
    with pytest.raises(ValueError, match=r"^calib: its dtype \(complex64\) is none the tool reads"):
        fitact_onnx.harden(MODEL, calib=CALIB.astype(np.complex64))
    with pytest.raises(ValueError, match=r"^data: array 'input': its dtype \(uint64\)"):
        fitact_onnx.check(MODEL, reference=MODEL, data={"input": TEST.astype(np.uint64)})
    with pytest.raises(fitact_onnx.FitactError, match="labels: expected int64 or int32 labels, got float32"):
        fitact_onnx.check(MODEL, reference=MODEL, data=TEST, labels=TEST_LABELS.astype(np.float32))


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
    # Held, the GIL would let the ticker in only while Python writes the model and reads the
    # hardened one.
    assert len(during) >= 0.25 * (end - start) / 0.005, (len(during), end - start)


def test_the_sdist_holds_what_the_build_reads_and_not_the_fixtures(tmp_path):
    # A full install from the sdist compiles everything (README, "From Python"): here only its
    # contents are checked, as maturin lists them.
    maturin = shutil.which("maturin", path=str(Path(sys.executable).parent))
    if maturin is None:
        pytest.skip("maturin is not installed in this venv")
    subprocess.run([maturin, "sdist", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, check=True)
    (sdist,) = tmp_path.glob("fitact_onnx-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    needed = ["pyproject.toml", "Cargo.toml", "Cargo.lock", "README.md", "src/main.rs", "src/data/memory.rs",
              "passes/Cargo.toml", "passes/proto/onnx.proto", "python/Cargo.toml", "python/src/lib.rs",
              "python/build_backend/wheel_with_cli.py", "python/fitact_onnx/__init__.py"]
    assert [n for n in needed if n not in names] == []
    assert [n for n in names if n.startswith(("fixtures/", "docs/", "fuzz/", "target/"))] == []
