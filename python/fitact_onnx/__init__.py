"""fitact-onnx: harden ONNX models against bit flips by bounding their activations.

The Python API of the ``fitact-onnx`` command line, one function per command, with the
command's options as keyword arguments (``--batch-size`` is ``batch_size=``; an option left
at ``None`` keeps the CLI's default)::

    import numpy as np, onnx, fitact_onnx
    model = onnx.load("model.onnx")
    hardened, report = fitact_onnx.harden(model, calib=np.load("calib.npy"), method="fitact")
    onnx.save(hardened, "model.hardened.onnx")
    campaign = fitact_onnx.evaluate([model, hardened], data=x, labels=y, ber=[1e-6, 1e-5],
                                    trials=50, seed=7)
    print(campaign["results"][0]["accuracy"])

Each call runs the command in-process, in the compiled extension ``fitact_onnx._native``
(the same code as the CLI, so the same inputs give byte-identical models and reports), with
the GIL released while models run. Models are ``onnx.ModelProto``, bytes or paths; data is a
numpy array, a dict of arrays per input name, a path (``.npy``, ``.npz``, a folder of images)
or an onnxruntime ``CalibrationDataReader``. In-memory inputs are written to a private
temporary folder, removed when the call returns. Results are the dicts of the JSON reports
(docs/reports.md). The onnxruntime engine uses the library of the ``onnxruntime`` package this
interpreter imports (``pip install onnxruntime``); without it, models run in tract.

Errors: ``ValueError`` for arguments the command rejects (a wrong type, an unknown value, an
option that needs another), ``FitactError`` for an error while running; the message is the
line the CLI prints after ``error:``.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import _native
from ._native import FitactError, __version__

__all__ = ["FitactError", "__version__", "check", "evaluate", "harden", "inspect", "merge"]

# What an in-memory input is called in a report, in place of its temporary file's path.
_IN_MEMORY = "<in memory>"


def harden(
    model: Any,
    calib: Any,
    *,
    output: Optional[os.PathLike] = None,
    report: Optional[os.PathLike] = None,
    allow_unchanged: Optional[bool] = None,
    activations: Any = None,
    method: Optional[str] = None,
    granularity: Optional[str] = None,
    mode: Optional[str] = None,
    margin: Optional[float] = None,
    batch_size: Optional[int] = None,
    engine: Optional[str] = None,
    ort_lib: Optional[os.PathLike] = None,
    search: Optional[bool] = None,
    labels: Any = None,
    search_output: Optional[str] = None,
    sdc: Optional[str] = None,
    sdc_tolerance: Any = None,
    budget: Any = None,
    max_evals: Optional[int] = None,
    time_limit: Any = None,
    percentile: Optional[float] = None,
    objective: Optional[str] = None,
    fault_ber: Optional[Sequence[float]] = None,
    fault_patterns: Optional[int] = None,
    fault_format: Optional[str] = None,
    seed: Optional[int] = None,
    preset: Optional[str] = None,
    scale: Optional[float] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    layout: Optional[str] = None,
    quiet: bool = False,
    verbose: int = 0,
) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """Bound every activation of ``model`` with bounds calibrated on ``calib``: ``fitact-onnx harden``.

    Returns the hardened ``onnx.ModelProto`` and the harden report as a dict (docs/reports.md;
    ``None`` when ``allow_unchanged`` wrote a model without activations unchanged). ``output``
    and ``report`` also keep the model (and its ``.data`` external weights) and the report
    at those paths. ``labels`` (with ``search=True``) is an int array or a ``.npy`` path.
    Every other option is the CLI's: ``method`` "fitact" | "ranger" | "clipact",
    ``granularity`` "layer" | "channel" | "neuron", ``mode`` "zero" | "saturate",
    ``activations`` "all" or a list such as ``["relu", "silu"]``, ``budget`` 0.005 or "0.5%",
    ``time_limit`` seconds, "2m" or a ``timedelta``; see ``fitact-onnx harden --help``.

    Example::

        hardened, report = fitact_onnx.harden(onnx.load("model.onnx"), calib=np.load("calib.npy"),
                                              method="ranger", search=True, budget="0.5%")
        print(len(report["activations"]), "activations bounded")
    """
    import onnx

    with _Workspace() as work:
        output_path = os.fspath(output) if output is not None else work.path("hardened.onnx")
        report_path = os.fspath(report) if report is not None else work.path("harden.json")
        options = dict(_options(harden, locals()), calib=work.data(calib, "calib"))
        options.update(labels=work.labels(labels, "labels"), report=report_path)
        work.run("harden", [work.model(model, "model"), output_path], options)
        hardened = onnx.load(output_path)
        found = work.read_json(report_path) if os.path.exists(report_path) else None
        return hardened, found


def evaluate(
    models: Sequence[Any],
    data: Any,
    *,
    labels: Any = None,
    ber: Optional[Sequence[float]] = None,
    fault: Optional[str] = None,
    layer: Optional[str] = None,
    output: Optional[str] = None,
    sdc: Optional[str] = None,
    sdc_tolerance: Any = None,
    trials: Optional[int] = None,
    seed: Optional[int] = None,
    format: Optional[str] = None,
    bits: Any = None,
    target: Optional[str] = None,
    shard: Optional[str] = None,
    threads: Optional[int] = None,
    batch_size: Optional[int] = None,
    engine: Optional[str] = None,
    ort_lib: Optional[os.PathLike] = None,
    report: Optional[os.PathLike] = None,
    csv: Optional[os.PathLike] = None,
    plot: Optional[os.PathLike] = None,
    html: Optional[os.PathLike] = None,
    dump_faults: Optional[os.PathLike] = None,
    preset: Optional[str] = None,
    scale: Optional[float] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    layout: Optional[str] = None,
    quiet: bool = False,
    verbose: int = 0,
) -> Dict[str, Any]:
    """A fault-injection campaign over ``models`` on ``data``: ``fitact-onnx evaluate``.

    Returns the campaign report as a dict (docs/reports.md: ``config``, ``models``,
    ``results`` with accuracy and SDC rate per model and BER). ``ber`` is a list of bit error
    rates; ``bits`` "23-30" or a list of bit positions; ``shard`` "K/N". ``report``, ``csv``,
    ``plot``, ``html`` and ``dump_faults`` also write those files. The results table is
    printed on stdout, as the CLI does (``quiet=True`` prints only errors).

    Example::

        campaign = fitact_onnx.evaluate([model, hardened], data=x_test, labels=y_test,
                                        ber=[1e-6, 1e-5], trials=50, seed=7)
        for row in campaign["results"]:
            print(row["model"], row["ber"], row["accuracy"])
    """
    if isinstance(models, (str, bytes, os.PathLike)) or not isinstance(models, Sequence):
        raise ValueError("models must be a list of models (onnx.ModelProto, bytes or paths)")
    with _Workspace() as work:
        report_path = os.fspath(report) if report is not None else work.path("campaign.json")
        options = dict(_options(evaluate, locals()), data=work.data(data, "data"))
        options.update(labels=work.labels(labels, "labels"), report=report_path)
        paths = [work.model(m, f"model{i}") for i, m in enumerate(models)]
        work.run("evaluate", paths, options)
        return work.read_json(report_path)


def check(
    model: Any,
    reference: Any,
    data: Any,
    *,
    labels: Any = None,
    output: Optional[str] = None,
    sdc: Optional[str] = None,
    sdc_tolerance: Any = None,
    max_accuracy_drop: Any = None,
    ber: Optional[float] = None,
    min_accuracy: Any = None,
    trials: Optional[int] = None,
    seed: Optional[int] = None,
    format: Optional[str] = None,
    batch_size: Optional[int] = None,
    engine: Optional[str] = None,
    ort_lib: Optional[os.PathLike] = None,
    report: Optional[os.PathLike] = None,
    preset: Optional[str] = None,
    scale: Optional[float] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    layout: Optional[str] = None,
    quiet: bool = False,
    verbose: int = 0,
) -> Dict[str, Any]:
    """The CI gate on a hardened ``model`` against its ``reference``: ``fitact-onnx check``.

    Returns the check report as a dict (docs/reports.md); ``report["passed"]`` is what the
    CLI's exit code says (0 when true, 1 when false) and ``report["verdict"]`` the line it
    prints (printed on stdout here too). A failed check is a result, not an exception.

    Example::

        gate = fitact_onnx.check(hardened, reference=model, data=x_test, labels=y_test,
                                 max_accuracy_drop="0.5%", ber=1e-5, min_accuracy="80%")
        assert gate["passed"], gate["verdict"]
    """
    with _Workspace() as work:
        report_path = os.fspath(report) if report is not None else work.path("check.json")
        options = dict(_options(check, locals()), data=work.data(data, "data"))
        options.update(
            labels=work.labels(labels, "labels"),
            reference=work.model(reference, "reference"),
            report=report_path,
        )
        work.run("check", [work.model(model, "model")], options)
        return work.read_json(report_path)


def inspect(model: Any, *, activations: Any = None) -> Dict[str, Any]:
    """The activations of ``model``, by kind, and what ``harden`` would bound: ``fitact-onnx inspect --json``.

    ``activations`` is what ``harden`` would be given ("all", the default, or a list of kinds).

    Example::

        listing = fitact_onnx.inspect("model.onnx", activations=["relu"])
        print(json.dumps(listing, indent=2))
    """
    kinds = _flag_text(activations) if activations is not None else "all"
    with _Workspace() as work:
        path = work.model(model, "model")
        return work.relabel(json.loads(_native.inspect_json(path, kinds)))


def merge(
    reports: Sequence[Any],
    *,
    report: Optional[os.PathLike] = None,
    csv: Optional[os.PathLike] = None,
    plot: Optional[os.PathLike] = None,
    html: Optional[os.PathLike] = None,
    quiet: bool = False,
    verbose: int = 0,
) -> Dict[str, Any]:
    """The report of a whole campaign from those of its shards: ``fitact-onnx merge``.

    ``reports`` are the shards' campaign reports, as dicts (what ``evaluate(..., shard="K/N")``
    returns) or JSON paths. Returns the merged report; ``report``, ``csv``, ``plot`` and
    ``html`` also write it.

    Example::

        shards = [fitact_onnx.evaluate(models, data=x, ber=[1e-5], shard=f"{k}/2") for k in range(2)]
        whole = fitact_onnx.merge(shards)
    """
    if isinstance(reports, (str, bytes, os.PathLike, Mapping)) or not isinstance(reports, Sequence):
        raise ValueError("reports must be a list of campaign reports (dicts or paths)")
    with _Workspace() as work:
        report_path = os.fspath(report) if report is not None else work.path("merged.json")
        options = dict(_options(merge, locals()), report=report_path)
        work.run("merge", [work.report(r, f"shard{i}") for i, r in enumerate(reports)], options)
        return work.read_json(report_path)


# The arguments that are not options of the command (or are turned into files first).
_NOT_OPTIONS = {"model", "models", "reports", "reference", "output", "calib", "data", "labels", "report", "work"}


def _options(function: Any, scope: Dict[str, Any]) -> Dict[str, Any]:
    """The keyword options of ``function`` as given in ``scope``, flags to be (``output``
    stays one for ``evaluate`` and ``check``, where it names a model output)."""
    names = function.__code__.co_varnames[: function.__code__.co_argcount + function.__code__.co_kwonlyargcount]
    keep_output = function is not harden
    return {n: scope[n] for n in names if n not in _NOT_OPTIONS or (n == "output" and keep_output)}


def _onnxruntime_package() -> Optional[str]:
    """The folder of the ``onnxruntime`` package this interpreter has imported or would import
    (found without importing it), where its wheel keeps ``capi/libonnxruntime.so*``."""
    module = sys.modules.get("onnxruntime")
    if module is not None and getattr(module, "__file__", None):
        return os.path.dirname(module.__file__)
    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _flag_text(value: Any) -> str:
    """A flag's value as the CLI reads it: lists comma-separated, durations in seconds."""
    if isinstance(value, (list, tuple)):
        return ",".join(_flag_text(v) for v in value)
    if isinstance(value, datetime.timedelta):
        return f"{value.total_seconds()!r}s"
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a value for this option")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (str, int)) or type(value).__module__ == "numpy":
        return str(value)
    raise ValueError(f"{value!r} ({type(value).__name__}) is not a value for this option")


def _flags(options: Mapping[str, Any]) -> List[str]:
    """``--name value`` per option given (``None`` is the CLI's default, ``True`` a bare flag)."""
    argv: List[str] = []
    for name, value in options.items():
        if name == "quiet":
            argv += ["-q"] if value else []
        elif name == "verbose":
            argv += ["-v"] * int(value)
        elif value is None or value is False:
            continue
        elif value is True:
            argv.append("--" + name.replace("_", "-"))
        else:
            argv += ["--" + name.replace("_", "-"), _flag_text(value)]
    return argv


class _Workspace:
    """A private temporary folder for the files a call makes from Python values, removed when
    it returns, and what each such file stands for in the reports."""

    def __enter__(self) -> "_Workspace":
        self._dir = tempfile.TemporaryDirectory(prefix="fitact-onnx-")
        self._stand_ins: Dict[str, str] = {}
        return self

    def __exit__(self, *exc: Any) -> None:
        self._dir.cleanup()

    def path(self, name: str) -> str:
        return os.path.join(self._dir.name, name)

    def _made(self, name: str) -> str:
        path = self.path(name)
        self._stand_ins[path] = _IN_MEMORY
        return path

    def model(self, model: Any, name: str) -> str:
        """A model's path: as given, or a file of its bytes (``ModelProto``, bytes)."""
        if isinstance(model, (str, os.PathLike)):
            return os.fspath(model)
        if isinstance(model, (bytes, bytearray, memoryview)):
            content = bytes(model)
        elif hasattr(model, "SerializeToString"):
            content = model.SerializeToString()
        else:
            raise ValueError(
                f"{name}: expected an onnx.ModelProto, bytes or a path, got {type(model).__name__}"
            )
        path = self._made(f"{name}.onnx")
        with open(path, "wb") as f:
            f.write(content)
        return path

    def data(self, data: Any, name: str) -> str:
        """A sample set's path: as given, or an ``.npy`` (one array) or ``.npz`` (arrays per
        input name; a ``CalibrationDataReader``'s feeds joined along the batch axis)."""
        import numpy as np

        if isinstance(data, (str, os.PathLike)):
            return os.fspath(data)
        if isinstance(data, np.ndarray):
            path = self._made(f"{name}.npy")
            np.save(path, data)
            return path
        if isinstance(data, Mapping):
            arrays = {str(k): np.asarray(v) for k, v in data.items()}
        elif callable(getattr(data, "get_next", None)):
            arrays = _drain(data, name)
        else:
            raise ValueError(
                f"{name}: expected a numpy array, a dict of arrays per input name, a path or a "
                f"CalibrationDataReader, got {type(data).__name__}"
            )
        if not arrays:
            raise ValueError(f"{name}: no arrays given")
        path = self._made(f"{name}.npz")
        np.savez(path, **arrays)
        return path

    def labels(self, labels: Any, name: str) -> Optional[str]:
        """A labels file's path: as given, or an ``.npy`` of the array (or list) given."""
        import numpy as np

        if labels is None or isinstance(labels, (str, os.PathLike)):
            return None if labels is None else os.fspath(labels)
        path = self._made(f"{name}.npy")
        np.save(path, np.asarray(labels))
        return path

    def report(self, report: Any, name: str) -> str:
        """A campaign report's path: as given, or a JSON file of the dict given."""
        if isinstance(report, (str, os.PathLike)):
            return os.fspath(report)
        if not isinstance(report, Mapping):
            raise ValueError(f"{name}: expected a campaign report (a dict) or a path, got {type(report).__name__}")
        path = self._made(f"{name}.json")
        with open(path, "w") as f:
            json.dump(report, f)
        return path

    def run(self, command: str, positional: List[str], options: Mapping[str, Any]) -> int:
        argv = [command, *positional, *_flags(options)]
        return _native.run(argv, _onnxruntime_package())

    def read_json(self, path: str) -> Dict[str, Any]:
        with open(path) as f:
            return self.relabel(json.load(f))

    def relabel(self, value: Any) -> Any:
        """``value`` with the paths of temporary files replaced by what they stand for."""
        if isinstance(value, dict):
            return {k: self.relabel(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.relabel(v) for v in value]
        if isinstance(value, str):
            return self._stand_ins.get(value, value)
        return value


def _drain(reader: Any, name: str) -> Dict[str, Any]:
    """The feeds of a ``CalibrationDataReader`` (``get_next()`` until ``None``), each input's
    arrays joined along axis 0 (scalars stacked)."""
    import numpy as np

    feeds: Dict[str, List[Any]] = {}
    count = 0
    while True:
        feed = reader.get_next()
        if feed is None:
            break
        if not isinstance(feed, Mapping):
            raise ValueError(f"{name}: get_next() gave a {type(feed).__name__}, not a dict of arrays per input name")
        if count and set(feed) != set(feeds):
            raise ValueError(f"{name}: feed {count} has inputs {sorted(feed)}, the first had {sorted(feeds)}")
        for key, value in feed.items():
            feeds.setdefault(str(key), []).append(np.asarray(value))
        count += 1
    if not count:
        raise ValueError(f"{name}: the CalibrationDataReader gave no feeds")
    return {k: np.stack(v) if v[0].ndim == 0 else np.concatenate(v, axis=0) for k, v in feeds.items()}
