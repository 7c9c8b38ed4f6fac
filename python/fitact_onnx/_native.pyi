"""The compiled half of fitact_onnx: the command line, in-process, and arrays handed to it in
memory."""

from pathlib import Path
from typing import List, Mapping, Optional, Union

import numpy as np

__version__: str

class FitactError(Exception):
    """A command failed; the message is the line the CLI prints after ``error: ``."""

def run(argv: List[str], onnxruntime_package: Optional[str] = None) -> int:
    """Runs ``fitact-onnx <argv>``; 0 done, 1 a failed check. Raises ValueError for arguments
    the CLI rejects, FitactError for an error while running.

    Example::

        _native.run(["inspect", "model.onnx"])
    """

def main(argv: List[str], onnxruntime_package: Optional[str] = None) -> int:
    """``python -m fitact_onnx``: runs ``fitact-onnx <argv>`` printing what the CLI prints;
    returns its exit code (0, 1 or 2).

    Example::

        sys.exit(_native.main(["--version"]))
    """

def inspect_json(model: str, activations: Optional[str] = None) -> str:
    """``fitact-onnx inspect MODEL [--activations ACTIVATIONS] --json``'s output.

    Example::

        listing = json.loads(_native.inspect_json("model.onnx"))
    """

class InMemory:
    """Arrays a command reads in memory: one array (as an ``.npy`` file holds) or arrays per
    input name (as an ``.npz``), copied out of numpy (any strides, native byte order) and
    registered under ``path``, which the command reads as the file it stands for, until
    ``close()``. Raises ValueError (naming ``name``) for a dtype the tool does not read.

    Example::

        calib = _native.InMemory(np.load("calib.npy"), "calib")
        _native.run(["harden", "model.onnx", "out.onnx", f"--calib={calib.path}"])
        calib.close()
    """

    path: Path

    def __init__(self, arrays: Union[np.ndarray, Mapping[str, np.ndarray]], name: str) -> None: ...
    def close(self) -> None:
        """Ends the registration; the arrays are dropped."""
