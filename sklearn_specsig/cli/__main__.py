"""``python -m sklearn_specsig.cli``: the ``specsig`` command."""

import sys

from . import main

sys.exit(main())
