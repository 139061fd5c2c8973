"""saewidgets benchmarks: every figure is a ratio against a reference measured in the same process, interleaved.

Run ``python -m benchmarks`` (or ``python benchmarks/run.py``) from the repository root; ``--quick`` for a
few-minute pass, ``--only NAME`` for one benchmark. See ``benchmarks/README.md``.
"""
