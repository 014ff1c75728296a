"""``python -m motion_core``: see :mod:`motion_core.cli`."""

import sys

from .cli import main

sys.exit(main())
