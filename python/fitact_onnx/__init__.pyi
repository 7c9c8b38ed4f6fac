"""fitact-onnx: harden ONNX models against bit flips by bounding their activations.

Example::

    hardened, report = fitact_onnx.harden(onnx.load("model.onnx"), calib=np.load("calib.npy"))
"""

import datetime
import os
from typing import Any, Dict, Mapping, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import onnx

from ._native import FitactError as FitactError

__version__: str

class CalibrationDataReader(Protocol):
    """What onnxruntime's quantization tools read samples from: a dict of arrays per input
    name per call, then ``None``."""

    def get_next(self) -> Optional[Mapping[str, np.ndarray]]: ...

PathLike = Union[str, "os.PathLike[str]"]
Model = Union[onnx.ModelProto, bytes, PathLike]
Data = Union[np.ndarray, Mapping[str, np.ndarray], PathLike, CalibrationDataReader]
Labels = Union[np.ndarray, Sequence[int], PathLike]
Fraction = Union[float, str]
Report = Dict[str, Any]

def harden(
    model: Model,
    calib: Data,
    *,
    output: Optional[PathLike] = ...,
    report: Optional[PathLike] = ...,
    allow_unchanged: Optional[bool] = ...,
    activations: Union[str, Sequence[str], None] = ...,
    method: Optional[str] = ...,
    granularity: Optional[str] = ...,
    mode: Optional[str] = ...,
    margin: Optional[float] = ...,
    batch_size: Optional[int] = ...,
    engine: Optional[str] = ...,
    ort_lib: Optional[PathLike] = ...,
    search: Optional[bool] = ...,
    labels: Optional[Labels] = ...,
    search_output: Optional[str] = ...,
    sdc: Optional[str] = ...,
    sdc_tolerance: Optional[Fraction] = ...,
    budget: Optional[Fraction] = ...,
    max_evals: Optional[int] = ...,
    time_limit: Union[float, str, datetime.timedelta, None] = ...,
    percentile: Optional[float] = ...,
    objective: Optional[str] = ...,
    fault_ber: Optional[Sequence[float]] = ...,
    fault_patterns: Optional[int] = ...,
    fault_format: Optional[str] = ...,
    seed: Optional[int] = ...,
    preset: Optional[str] = ...,
    scale: Optional[float] = ...,
    mean: Optional[Sequence[float]] = ...,
    std: Optional[Sequence[float]] = ...,
    layout: Optional[str] = ...,
    quiet: bool = ...,
    verbose: int = ...,
) -> Tuple[onnx.ModelProto, Optional[Report]]:
    """``fitact-onnx harden``: the hardened model and the harden report.

    Example::

        hardened, report = fitact_onnx.harden(model, calib=np.load("calib.npy"), method="ranger")
    """

def evaluate(
    models: Sequence[Model],
    data: Data,
    *,
    labels: Optional[Labels] = ...,
    ber: Optional[Sequence[float]] = ...,
    fault: Optional[str] = ...,
    layer: Optional[str] = ...,
    output: Optional[str] = ...,
    sdc: Optional[str] = ...,
    sdc_tolerance: Optional[Fraction] = ...,
    trials: Optional[int] = ...,
    seed: Optional[int] = ...,
    format: Optional[str] = ...,
    bits: Union[str, Sequence[int], None] = ...,
    target: Optional[str] = ...,
    shard: Optional[str] = ...,
    threads: Optional[int] = ...,
    batch_size: Optional[int] = ...,
    engine: Optional[str] = ...,
    ort_lib: Optional[PathLike] = ...,
    report: Optional[PathLike] = ...,
    csv: Optional[PathLike] = ...,
    plot: Optional[PathLike] = ...,
    html: Optional[PathLike] = ...,
    dump_faults: Optional[PathLike] = ...,
    preset: Optional[str] = ...,
    scale: Optional[float] = ...,
    mean: Optional[Sequence[float]] = ...,
    std: Optional[Sequence[float]] = ...,
    layout: Optional[str] = ...,
    quiet: bool = ...,
    verbose: int = ...,
) -> Report:
    """``fitact-onnx evaluate``: the campaign report.

    Example::

        campaign = fitact_onnx.evaluate([model, hardened], data=x, labels=y, ber=[1e-5], trials=50)
    """

def check(
    model: Model,
    reference: Model,
    data: Data,
    *,
    labels: Optional[Labels] = ...,
    output: Optional[str] = ...,
    sdc: Optional[str] = ...,
    sdc_tolerance: Optional[Fraction] = ...,
    max_accuracy_drop: Optional[Fraction] = ...,
    ber: Optional[float] = ...,
    min_accuracy: Optional[Fraction] = ...,
    trials: Optional[int] = ...,
    seed: Optional[int] = ...,
    format: Optional[str] = ...,
    batch_size: Optional[int] = ...,
    engine: Optional[str] = ...,
    ort_lib: Optional[PathLike] = ...,
    report: Optional[PathLike] = ...,
    preset: Optional[str] = ...,
    scale: Optional[float] = ...,
    mean: Optional[Sequence[float]] = ...,
    std: Optional[Sequence[float]] = ...,
    layout: Optional[str] = ...,
    quiet: bool = ...,
    verbose: int = ...,
) -> Report:
    """``fitact-onnx check``: the check report (``passed``, ``verdict``).

    Example::

        assert fitact_onnx.check(hardened, reference=model, data=x, labels=y)["passed"]
    """

def inspect(model: Model, *, activations: Union[str, Sequence[str], None] = ...) -> Report:
    """``fitact-onnx inspect --json``: the activations found.

    Example::

        print(fitact_onnx.inspect("model.onnx")["activations"])
    """

def merge(
    reports: Sequence[Union[Report, PathLike]],
    *,
    report: Optional[PathLike] = ...,
    csv: Optional[PathLike] = ...,
    plot: Optional[PathLike] = ...,
    html: Optional[PathLike] = ...,
    quiet: bool = ...,
    verbose: int = ...,
) -> Report:
    """``fitact-onnx merge``: the report of the whole campaign.

    Example::

        whole = fitact_onnx.merge([shard0, shard1])
    """
