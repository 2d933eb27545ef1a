"""The workbench viewer's entry point: ``python apps/viewer.py --runs DIR`` (same as ``workbench app``).

The app itself is ``workbench/viewer/app.py`` (inside the package, so that ``workbench app`` works
from any install with the ``app`` extra); see docs/viewer.md.
"""

import sys

from workbench.viewer import load_app

if __name__ == "__main__":
    sys.exit(load_app().main())
