"""The span cores the MeshTracer tests run on.

The Python core is the definition and runs everywhere; the compiled one
(`_speedups`, an optional extension built at install when a C compiler is
there) runs as well wherever it was built, and must do what the Python one
does.
"""

from actormesh.observability._recorder import SPEEDUPS

__all__ = ["CORES"]

CORES = ["compiled", "python"] if SPEEDUPS else ["python"]
