"""The one version source: `actormesh.__version__`; the package metadata reads it too
(`[tool.setuptools.dynamic]` in libs/actormesh/pyproject.toml)."""

VERSION = "0.1.0"
