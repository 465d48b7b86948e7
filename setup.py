"""The compiled send engine (zctrace.workload._engine); everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "zctrace.workload._engine",
    sources=["zctrace/workload/_enginemodule.c", "zctrace/workload/engine.c"],
    depends=["zctrace/workload/engine.h"],
    extra_compile_args=["-O2", "-Wall"],
)])
