"""The compiled half of fitact_onnx: the command line, in-process."""

from typing import List, Optional

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
    """The console script: runs ``fitact-onnx <argv>`` printing what the CLI prints; returns
    its exit code (0, 1 or 2).

    Example::

        sys.exit(_native.main(["--version"]))
    """

def inspect_json(model: str, activations: str = "all") -> str:
    """``fitact-onnx inspect MODEL --activations ACTIVATIONS --json``'s output.

    Example::

        listing = json.loads(_native.inspect_json("model.onnx"))
    """
