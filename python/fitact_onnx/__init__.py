"""fitact-onnx: harden ONNX models against bit flips by bounding their activations.

The Python API of the ``fitact-onnx`` command line, one function per command, with the
command's options as keyword arguments (``--batch-size`` is ``batch_size=``; an option not
given, or ``None``, keeps the CLI's default; ``True`` is a bare flag such as ``search=True``;
the signatures are in ``__init__.pyi``)::

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
or an onnxruntime ``CalibrationDataReader``. Arrays reach the command in memory (copied once,
read as the ``.npy``/``.npz`` they stand for: the same conversions and messages); a model
given as a ``ModelProto`` or bytes is written to a private temporary folder, removed when the
call returns. Results are the dicts of the JSON reports (docs/reports.md). The onnxruntime
engine uses the library of the ``onnxruntime`` package this interpreter imports
(``pip install onnxruntime``); without it, models run in tract.

Errors: ``ValueError`` for arguments the command rejects (a wrong type, an unknown value, an
option that needs another, data whose dtype, shape or layout does not fit the model: that one
is ``DataError``, a ``FitactError`` too), ``FitactError`` for an error while running; the
message is the line the CLI prints after ``error:`` (an in-memory argument named as its
keyword, ``calib:``).
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

__all__ = ["DataError", "FitactError", "__version__", "check", "evaluate", "harden", "inspect", "merge"]


class DataError(FitactError, ValueError):
    """Data the command rejects: its arrays' dtype, shape or layout do not fit the model's
    inputs. A ``ValueError`` (a wrong argument, as numpy users expect) and a ``FitactError``."""

# What an in-memory input is called in a report, in place of the path that stood for it.
_IN_MEMORY = "<in memory>"


def harden(model: Any, calib: Any, **options: Any) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """Bound every activation of ``model`` with bounds calibrated on ``calib``: ``fitact-onnx harden``.

    Returns the hardened ``onnx.ModelProto`` and the harden report as a dict (docs/reports.md;
    ``None`` when ``allow_unchanged=True`` wrote a model without activations unchanged).
    ``output=`` and ``report=`` (paths) also keep the model (with its ``.data`` external
    weights, if any) and the report there. ``labels=`` (with ``search=True``) is an int array
    or a ``.npy`` path. Every other option is the CLI's (``fitact-onnx harden --help``):
    ``method`` "fitact" | "ranger" | "clipact", ``granularity`` "layer" | "channel" | "neuron" | "hybrid",
    ``mode`` "zero" | "saturate", ``activations`` "all" or a list such as ``["relu", "silu"]``,
    ``margin``, ``batch_size``, ``engine`` "auto" | "onnxruntime" | "tract", ``ort_lib``,
    ``search``, ``budget`` 0.005 or "0.5%", ``max_evals``, ``time_limit`` (seconds, "2m" or a
    ``timedelta``), ``percentile``, ``objective``, ``fault_ber``, ``seed``, ``max_overhead`` "10%" (with ``runtime``
    "onnxruntime" | "openvino" | "tract", ``labels=`` too), the image options
    (``preset``, ``scale``, ``mean``, ``std``, ``layout``), ``quiet`` and ``verbose``.

    Example::

        hardened, report = fitact_onnx.harden(onnx.load("model.onnx"), calib=np.load("calib.npy"),
                                              method="ranger", search=True, budget="0.5%")
        print(len(report["activations"]), "activations bounded")
    """
    import onnx

    with _Workspace() as work:
        output = work.output(options.pop("output", None), "hardened.onnx")
        report = work.output(options.pop("report", None), "harden.json")
        labels = work.labels(options.pop("labels", None), "labels")
        inputs = [work.model(model, "model"), output]
        work.run("harden", inputs, dict(options, calib=work.data(calib, "calib"), labels=labels, report=report))
        hardened = onnx.load(output)
        return hardened, work.read_json(report) if os.path.exists(report) else None


def evaluate(
    models: Sequence[Any], data: Any, *, executor: Any = None, shards: Optional[int] = None, **options: Any
) -> Dict[str, Any]:
    """A fault-injection campaign over ``models`` on ``data``: ``fitact-onnx evaluate``.

    Returns the campaign report as a dict (docs/reports.md: ``config``, ``models``,
    ``results`` with the accuracy and SDC rate per model and BER). ``labels=`` is an int array
    or a path; ``ber`` a list of bit error rates; ``bits`` "23-30" or a list of bit positions;
    ``shard`` "K/N"; ``report``, ``csv``, ``plot``, ``html`` and ``dump_faults`` (paths) also
    write those files. Every other option is the CLI's (``fitact-onnx evaluate --help``):
    ``fault``, ``layer``, ``output`` (the model output judged), ``sdc``, ``sdc_tolerance``,
    ``trials``, ``seed``, ``format``, ``target``, ``threads``, ``batch_size``, ``engine``,
    ``ort_lib``, the image options, ``quiet``, ``verbose``. The results table is printed on
    stdout, as the CLI does (``quiet=True`` prints only errors).

    ``executor=`` (a ``concurrent.futures.Executor``: Dask's ``Client.get_executor()``,
    ``mpi4py.futures.MPIPoolExecutor``, a ``ProcessPoolExecutor``...) with ``shards=N`` runs
    the campaign as N tasks on it (``shard="K/N"`` each) and returns their merged report: the
    one this call returns without them. ``report``, ``csv``, ``plot`` and ``html`` are the
    merged report's. Models and data given as paths are read by each worker at that path (a
    filesystem they share); models in memory and arrays are shipped: by a Dask executor once
    per worker (scattered), by any other with each task (docs/guide/scale-out.md).

    Example::

        campaign = fitact_onnx.evaluate([model, hardened], data=x_test, labels=y_test,
                                        ber=[1e-6, 1e-5], trials=50, seed=7)
        for row in campaign["results"]:
            print(row["model"], row["ber"], row["accuracy"])

        client = distributed.Client("scheduler:8786")
        campaign = fitact_onnx.evaluate([model, hardened], data=x_test, labels=y_test, ber=[1e-5],
                                        trials=1000, executor=client.get_executor(), shards=64)
    """
    if isinstance(models, (str, bytes, os.PathLike)) or not isinstance(models, Sequence):
        raise ValueError("models must be a list of models (onnx.ModelProto, bytes or paths)")
    if executor is not None or shards is not None:
        from ._executors import evaluate_sharded

        return evaluate_sharded(evaluate, merge, models, data, executor, shards, options)
    with _Workspace() as work:
        report = work.output(options.pop("report", None), "campaign.json")
        labels = work.labels(options.pop("labels", None), "labels")
        paths = [work.model(m, f"model{i}") for i, m in enumerate(models)]
        work.run("evaluate", paths, dict(options, data=work.data(data, "data"), labels=labels, report=report))
        return work.read_json(report)


def check(model: Any, reference: Any, data: Any, **options: Any) -> Dict[str, Any]:
    """The CI gate on a hardened ``model`` against its ``reference``: ``fitact-onnx check``.

    Returns the check report as a dict (docs/reports.md); ``report["passed"]`` is what the
    CLI's exit code says (0 when true, 1 when false) and ``report["verdict"]`` the line it
    prints (on stdout here too). A failed check is a result, not an exception. Options as the
    CLI's (``fitact-onnx check --help``): ``labels``, ``max_accuracy_drop`` (0.005 or "0.5%"),
    ``ber`` and ``min_accuracy`` (together), ``trials``, ``seed``, ``format``, ``output``,
    ``sdc``, ``sdc_tolerance``, ``batch_size``, ``engine``, ``ort_lib``, ``report`` (a path),
    the image options, ``quiet``, ``verbose``.

    Example::

        gate = fitact_onnx.check(hardened, reference=model, data=x_test, labels=y_test,
                                 max_accuracy_drop="0.5%", ber=1e-5, min_accuracy="80%")
        assert gate["passed"], gate["verdict"]
    """
    with _Workspace() as work:
        report = work.output(options.pop("report", None), "check.json")
        labels = work.labels(options.pop("labels", None), "labels")
        files = dict(reference=work.model(reference, "reference"), data=work.data(data, "data"))
        work.run("check", [work.model(model, "model")], dict(options, **files, labels=labels, report=report))
        return work.read_json(report)


def inspect(model: Any, *, activations: Any = None) -> Dict[str, Any]:
    """The activations of ``model``, by kind, and what ``harden`` would bound: ``fitact-onnx inspect --json``.

    ``activations`` is what ``harden`` would be given ("all", a list of kinds, or None for
    harden's default: "all", with the logits when the classifier computes in float16).

    Example::

        listing = fitact_onnx.inspect("model.onnx", activations=["relu"])
        print(json.dumps(listing, indent=2))
    """
    with _Workspace() as work:
        path = work.model(model, "model")
        kinds = None if activations is None else _flag_text(activations)
        return work.relabel(json.loads(_native.inspect_json(path, kinds)))


def merge(reports: Sequence[Any], **options: Any) -> Dict[str, Any]:
    """The report of a whole campaign from those of its shards: ``fitact-onnx merge``.

    ``reports`` are the shards' campaign reports, as dicts (what ``evaluate(..., shard="K/N")``
    returns) or JSON paths, in any order. Returns the merged report; ``report``, ``csv``,
    ``plot`` and ``html`` (paths) also write it; ``quiet``, ``verbose``. Reports of different
    campaigns, or a shard missing or given twice, raise ``FitactError`` naming it (a report
    given as a dict is named ``reports[i]``).

    Example::

        shards = [fitact_onnx.evaluate(models, data=x, ber=[1e-5], shard=f"{k}/2") for k in range(2)]
        whole = fitact_onnx.merge(shards)
    """
    if isinstance(reports, (str, bytes, os.PathLike, Mapping)) or not isinstance(reports, Sequence):
        raise ValueError("reports must be a list of campaign reports (dicts or paths)")
    with _Workspace() as work:
        report = work.output(options.pop("report", None), "merged.json")
        shards = [work.report(r, f"reports[{i}]") for i, r in enumerate(reports)]
        work.run("merge", shards, dict(options, report=report))
        return work.read_json(report)


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
            # One word, so that a value starting with '-' is not read as a flag.
            argv.append(f"--{name.replace('_', '-')}={_flag_text(value)}")
    return argv


class _Workspace:
    """What a call hands the command for its Python values: a private temporary folder for the
    files it makes (models, reports), removed when it returns, and arrays registered in memory
    until then; and what each path stands for in reports (``<in memory>``) and messages (the
    keyword it was given as)."""

    def __enter__(self) -> "_Workspace":
        self._dir = tempfile.TemporaryDirectory(prefix="fitact-onnx-")
        self._stand_ins: Dict[str, str] = {}
        self._names: Dict[str, str] = {}
        self._arrays: List[Any] = []
        return self

    def __exit__(self, *exc: Any) -> None:
        for arrays in self._arrays:
            arrays.close()
        self._dir.cleanup()

    def path(self, name: str) -> str:
        return os.path.join(self._dir.name, name)

    def output(self, given: Any, name: str) -> str:
        """Where the command writes a file: the path given, or one in the folder."""
        return os.fspath(given) if given is not None else self.path(name)

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

    def _in_memory(self, arrays: Any, name: str) -> str:
        """The path the command reads ``arrays`` (an array or a dict of them) at."""
        registered = _native.InMemory(arrays, name)
        self._arrays.append(registered)
        path = os.fspath(registered.path)
        self._stand_ins[path] = _IN_MEMORY
        self._names[path] = name
        return path

    def data(self, data: Any, name: str) -> str:
        """A sample set's path: as given, or that of the arrays handed over in memory: one
        array (as an ``.npy``) or arrays per input name (as an ``.npz``; a
        ``CalibrationDataReader``'s feeds joined along the batch axis)."""
        import numpy as np

        if isinstance(data, (str, os.PathLike)):
            return os.fspath(data)
        if isinstance(data, np.ndarray):
            return self._in_memory(_native_order(data), name)
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
        return self._in_memory({k: _native_order(v) for k, v in arrays.items()}, name)

    def labels(self, labels: Any, name: str) -> Optional[str]:
        """A labels file's path: as given, or that of the array (or list) given, in memory."""
        import numpy as np

        if labels is None or isinstance(labels, (str, os.PathLike)):
            return None if labels is None else os.fspath(labels)
        return self._in_memory(_native_order(np.asarray(labels)), name)

    def report(self, report: Any, name: str) -> str:
        """A campaign report's path: as given, or a JSON file of the dict given."""
        if isinstance(report, (str, os.PathLike)):
            return os.fspath(report)
        if not isinstance(report, Mapping):
            raise ValueError(f"{name}: expected a campaign report (a dict) or a path, got {type(report).__name__}")
        path = self._made(f"{name}.json")
        self._names[path] = name
        with open(path, "w") as f:
            json.dump(report, f)
        return path

    def run(self, command: str, positional: List[str], options: Mapping[str, Any]) -> int:
        argv = [command, *positional, *_flags(options)]
        try:
            return _native.run(argv, _onnxruntime_package())
        except _native.DataArgumentError as error:
            raise DataError(self.rename(str(error))) from None
        except (ValueError, FitactError) as error:
            message = self.rename(str(error))
            if message == str(error):
                raise
            raise type(error)(message) from None

    def rename(self, message: str) -> str:
        """``message`` with the paths of in-memory arrays replaced by their keywords."""
        for path, name in self._names.items():
            message = message.replace(path, name)
        return message

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


def _native_order(array: Any) -> Any:
    """``array`` in this machine's byte order (numpy reads either from a file; in memory the
    tool takes the native one)."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


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
