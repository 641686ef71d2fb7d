"""The ZeRO-3 engine, imported as ``tiermem.engine`` (packaged from ``engine/``).

[Note: the folder sits at the top level as the project layout asks and is
mapped to ``tiermem/engine`` by ``[tool.scikit-build.wheel.packages]``. It is
never imported as a bare ``engine`` module.]
"""
