"""A campaign's shards spread over a ``concurrent.futures.Executor``: ``evaluate(...,
executor=ex, shards=N)``.

Shard K runs ``evaluate(..., shard="K/N")`` as a task of the executor (Dask's
``Client.get_executor()``, ``mpi4py.futures.MPIPoolExecutor``, a ``ProcessPoolExecutor``...:
whatever the executor does is the scheduling; nothing here schedules), and the reports that
come back are merged by the native ``merge``, which checks they are one campaign's, every
shard once. Every trial is seeded by its own index, so the merged report is the one a single
``evaluate`` returns.

What a task is given: models and data given as paths stay paths (each worker reads the file
at that path: on several machines, a filesystem they share); models as ``ModelProto`` or
bytes, and arrays, are shipped. With a Dask executor they are scattered to every worker once
(``Client.scatter(..., broadcast=True)``) and each task gets the worker's copy; any other
executor pickles a task's arguments with each task, so they travel once per shard (give paths
on a shared filesystem to avoid it).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

# Options that name files the merged report is written to, not each shard's.
_MERGED_OUTPUTS = ("report", "csv", "plot", "html")

# What a task gets: the models (paths or bytes), the data (a path, an array or a dict of
# arrays) and the labels (None, a path or an array).
Payload = Tuple[List[Any], Any, Any]


def evaluate_sharded(
    evaluate: Callable[..., Dict[str, Any]],
    merge: Callable[..., Dict[str, Any]],
    models: Sequence[Any],
    data: Any,
    executor: Any,
    shards: Any,
    options: Dict[str, Any],
) -> Dict[str, Any]:
    """The merged report of ``shards`` tasks of ``evaluate`` on ``executor``."""
    count = _shard_count(shards, executor)
    for refused in ("shard", "dump_faults"):
        if options.get(refused) is not None:
            raise ValueError(f"{refused}= does not go with executor=: each task runs one shard of its own")
    merged = {k: options.pop(k) for k in _MERGED_OUTPUTS if k in options}
    verbosity = {k: options.pop(k) for k in ("quiet", "verbose") if k in options}
    payload = _payload(models, data, options.pop("labels", None))
    shipped = _ship(executor, payload)
    shard_options = dict(options, quiet=True)
    futures = [executor.submit(_run_shard, shipped, f"{k}/{count}", shard_options) for k in range(count)]
    try:
        reports = [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    return merge(reports, **merged, **verbosity)


def _shard_count(shards: Any, executor: Any) -> int:
    if executor is None:
        raise ValueError("shards= needs executor= (a concurrent.futures.Executor to run them on)")
    if not callable(getattr(executor, "submit", None)):
        raise ValueError(f"executor: expected a concurrent.futures.Executor, got {type(executor).__name__}")
    if shards is None:
        raise ValueError("executor= needs shards= (how many shards to cut the campaign into)")
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ValueError(f"shards: expected a whole number of at least 1, got {shards!r}")
    return shards


def _payload(models: Sequence[Any], data: Any, labels: Any) -> Payload:
    """What every task needs, in a form that pickles: paths as strings, models as bytes,
    arrays as arrays (a ``CalibrationDataReader`` drained here, once)."""
    import numpy as np

    from . import _drain

    def model(m: Any, name: str) -> Any:
        if isinstance(m, (str, os.PathLike)):
            return os.fspath(m)
        if isinstance(m, (bytes, bytearray, memoryview)):
            return bytes(m)
        if hasattr(m, "SerializeToString"):
            return m.SerializeToString()
        raise ValueError(f"{name}: expected an onnx.ModelProto, bytes or a path, got {type(m).__name__}")

    if isinstance(data, (str, os.PathLike)):
        data = os.fspath(data)
    elif isinstance(data, Mapping):
        data = {str(k): np.asarray(v) for k, v in data.items()}
    elif callable(getattr(data, "get_next", None)):
        data = _drain(data, "data")
    if isinstance(labels, os.PathLike):
        labels = os.fspath(labels)
    elif labels is not None and not isinstance(labels, str):
        labels = np.asarray(labels)
    return [model(m, f"model{i}") for i, m in enumerate(models)], data, labels


def _ship(executor: Any, payload: Payload) -> Any:
    """The payload as tasks get it: a Dask executor's client scatters it to every worker once
    (a task given the future gets the worker's copy; the data is released when the future
    is); other executors get it as is."""
    client = getattr(executor, "_client", None)
    if type(executor).__module__.startswith("distributed") and client is not None:
        [future] = client.scatter([payload], broadcast=True, hash=False)
        return future
    return payload


def _run_shard(payload: Payload, shard: str, options: Mapping[str, Any]) -> Dict[str, Any]:
    """One shard, in the worker: ``evaluate`` on the payload's models and data."""
    from . import evaluate

    models, data, labels = payload
    return evaluate(models, data, labels=labels, shard=shard, **options)
