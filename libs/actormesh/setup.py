"""The optional C speedups of `actormesh.observability` (see `_speedups.c`).

Optional: where they cannot be compiled (no C compiler or Python headers) the
package installs without them and runs their Python definitions.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "actormesh.observability._speedups",
            ["src/actormesh/observability/_speedups.c"],
            optional=True,
        )
    ]
)
