"""``python -m maekit`` (and ``torchrun -m maekit``)."""

import sys

from .cli import main

sys.exit(main())
