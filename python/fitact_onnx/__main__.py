"""``python -m fitact_onnx ...``: the command line, run in-process by the extension module (the
same code as the ``fitact-onnx`` binary the wheel installs: same options, output and exit
codes), for an interpreter whose scripts folder is not on PATH."""

import signal
import sys

from . import _native, _onnxruntime_package


def main() -> None:
    # Python turns Ctrl-C into an exception it can raise only when the command returns;
    # the default action ends a long campaign at once, as it does the binary.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(_native.main(sys.argv[1:], _onnxruntime_package()))


if __name__ == "__main__":
    main()
