"""``python -m cac_mhub.training``: see :mod:`cac_mhub.training.recipe`."""

import sys

from .recipe import main

sys.exit(main())
