"""fitact-onnx: harden ONNX models against bit flips by bounding their activations.

Example::

    hardened, report = fitact_onnx.harden(onnx.load("model.onnx"), calib=np.load("calib.npy"))
"""

import concurrent.futures
import datetime
import os
from typing import Any, Dict, Mapping, Optional, Protocol, Sequence, Tuple, TypedDict, Union

from typing_extensions import Unpack

import numpy as np
import onnx

from ._native import FitactError as FitactError

class DataError(FitactError, ValueError):
    """Data whose dtype, shape or layout does not fit the model's inputs."""

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

# The options, grouped as the CLI's flags are (src/cli/args.rs); every one may be left out
# (the CLI's default) or be None.

class Verbosity(TypedDict, total=False):
    quiet: bool  # -q
    verbose: int  # -v, -vv

class ImageOptions(TypedDict, total=False):
    """How a folder of images becomes inputs (ignored for arrays and .npy/.npz)."""

    preset: Optional[str]  # unit | symmetric | imagenet | raw
    scale: Optional[float]
    mean: Optional[Sequence[float]]
    std: Optional[Sequence[float]]
    layout: Optional[str]  # nchw | nhwc

class EngineOptions(TypedDict, total=False):
    engine: Optional[str]  # auto | onnxruntime | tract
    ort_lib: Optional[PathLike]
    batch_size: Optional[int]

class JudgeOptions(TypedDict, total=False):
    """What counts as a changed prediction on the judged output."""

    sdc: Optional[str]  # auto | top1 | tolerance
    sdc_tolerance: Optional[Fraction]

class RunOptions(Verbosity, ImageOptions, EngineOptions, JudgeOptions, total=False):
    labels: Optional[Labels]
    report: Optional[PathLike]
    seed: Optional[int]

class HardenOptions(RunOptions, total=False):
    output: Optional[PathLike]  # also keep the hardened model here
    allow_unchanged: Optional[bool]
    activations: Union[str, Sequence[str], None]  # "all" or kinds: relu, silu, gelu, ...
    method: Optional[str]  # fitact | ranger | clipact
    granularity: Optional[str]  # layer | channel | neuron
    mode: Optional[str]  # zero | saturate
    margin: Optional[float]
    search: Optional[bool]
    search_output: Optional[str]
    budget: Optional[Fraction]
    max_evals: Optional[int]
    time_limit: Union[float, str, datetime.timedelta, None]
    percentile: Optional[float]
    objective: Optional[str]  # tight | resilience
    fault_ber: Optional[Sequence[float]]
    fault_patterns: Optional[int]
    fault_format: Optional[str]  # float32 | q15.16 | int8

class CheckOptions(RunOptions, total=False):
    output: Optional[str]  # the model output compared
    max_accuracy_drop: Optional[Fraction]
    ber: Optional[float]
    min_accuracy: Optional[Fraction]
    trials: Optional[int]
    format: Optional[str]

class EvaluateOptions(RunOptions, total=False):
    output: Optional[str]  # the model output judged
    ber: Optional[Sequence[float]]
    fault: Optional[str]  # weight | activation
    layer: Optional[str]
    trials: Optional[int]
    format: Optional[str]  # float32 | q15.16 | int8
    bits: Union[str, Sequence[int], None]  # "23-30" or [30, 31]
    target: Optional[str]
    shard: Optional[str]  # "K/N" or "auto" (from the scheduler's variables)
    shard_count: Optional[int]  # N, with shard="auto" where the scheduler gives only K
    threads: Optional[int]
    csv: Optional[PathLike]
    plot: Optional[PathLike]
    html: Optional[PathLike]
    dump_faults: Optional[PathLike]

class MergeOptions(Verbosity, total=False):
    report: Optional[PathLike]
    csv: Optional[PathLike]
    plot: Optional[PathLike]
    html: Optional[PathLike]

def harden(model: Model, calib: Data, **options: Unpack[HardenOptions]) -> Tuple[onnx.ModelProto, Optional[Report]]:
    """``fitact-onnx harden``: the hardened model and the harden report.

    Example::

        hardened, report = fitact_onnx.harden(model, calib=np.load("calib.npy"), method="ranger")
    """

def evaluate(
    models: Sequence[Model],
    data: Data,
    *,
    executor: Optional[concurrent.futures.Executor] = ...,
    shards: Optional[int] = ...,
    **options: Unpack[EvaluateOptions],
) -> Report:
    """``fitact-onnx evaluate``: the campaign report; with ``executor=`` and ``shards=N``, N
    shards run as tasks on the executor, merged.

    Example::

        campaign = fitact_onnx.evaluate([model, hardened], data=x, labels=y, ber=[1e-5], trials=50)
        spread = fitact_onnx.evaluate([model, hardened], data=x, labels=y, ber=[1e-5], trials=50,
                                      executor=client.get_executor(), shards=8)
    """

def check(model: Model, reference: Model, data: Data, **options: Unpack[CheckOptions]) -> Report:
    """``fitact-onnx check``: the check report (``passed``, ``verdict``).

    Example::

        assert fitact_onnx.check(hardened, reference=model, data=x, labels=y)["passed"]
    """

def inspect(model: Model, *, activations: Union[str, Sequence[str]] = ...) -> Report:
    """``fitact-onnx inspect --json``: the activations found.

    Example::

        print(fitact_onnx.inspect("model.onnx")["activations"])
    """

def merge(reports: Sequence[Union[Report, PathLike]], **options: Unpack[MergeOptions]) -> Report:
    """``fitact-onnx merge``: the report of the whole campaign.

    Example::

        whole = fitact_onnx.merge([shard0, shard1])
    """
