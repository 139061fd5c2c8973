"""Only what pyproject.toml cannot say: the wheel carries the tutorial notebooks as package data.

They live in ``tutorials/`` at the top of the repository (where Binder, Colab and the README link to them); building
copies them into ``saewidgets/tutorials/`` inside the wheel, so ``saewidgets demo --lab`` and ``saewidgets
tutorials DIR`` work from an installed wheel or sdist.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

TUTORIALS = Path(__file__).resolve().parent / "tutorials"


class BuildWithTutorials(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "saewidgets" / "tutorials"
        target.mkdir(parents=True, exist_ok=True)
        for notebook in sorted(TUTORIALS.glob("*.ipynb")):
            shutil.copyfile(notebook, target / notebook.name)


setup(cmdclass={"build_py": BuildWithTutorials})
