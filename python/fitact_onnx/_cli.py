"""The ``fitact-onnx`` console script: the command line, run in-process by the extension
module (the same code as the Rust binary: same options, output and exit codes)."""

import signal
import sys

from . import _native, _onnxruntime_package


def main() -> None:
    # Python turns Ctrl-C into an exception it can raise only when the command returns;
    # the default action ends a long campaign at once, as it does the binary.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(_native.main(sys.argv[1:], _onnxruntime_package()))
