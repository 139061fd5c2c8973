"""Settings for every pytest run from the repository root, tutorials included.

The tests run on the quick demo SAE: the integration fixtures train it, and the tutorials that nbmake executes
read it through ``demo_artifacts()`` in kernels that inherit this process's environment. Without this, the
README's test command would run the tutorials on the full-size SAE (training it first, and retraining the
tutorials' own SAEs at full length): much slower, and a different SAE from the one the tests checked. Set
``SAEWIDGETS_QUICK=0`` to run the tutorials on the full one on purpose.
"""

import os


def pytest_configure(config):
    os.environ.setdefault("SAEWIDGETS_QUICK", "1")
