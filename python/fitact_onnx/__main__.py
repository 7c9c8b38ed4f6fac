"""``python -m fitact_onnx ...``: the command line, as the ``fitact-onnx`` script."""

from ._cli import main

main()
