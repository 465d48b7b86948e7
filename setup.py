"""What pyproject.toml cannot say: the compiled send engine (zctrace.workload._engine), and
package data from outside the package folder: the probe sources (probes/) go into the wheel as
zctrace/_probes, where zctrace/paths.py finds them. An editable install reads the checkout's
folder instead. Nothing from scripts/ (developer tools) or tests/ goes into the wheel."""

import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

DATA = {"_probes": sorted(Path("probes").glob("*"))}


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for folder, sources in DATA.items():
            dest = Path(self.build_lib, "zctrace", folder)
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            for source in sources:
                shutil.copy2(source, dest)


setup(cmdclass={"build_py": BuildPyWithData}, ext_modules=[Extension(
    "zctrace.workload._engine",
    sources=["zctrace/workload/_enginemodule.c", "zctrace/workload/engine.c"],
    depends=["zctrace/workload/engine.h"],
    extra_compile_args=["-O2", "-Wall"],
)])
