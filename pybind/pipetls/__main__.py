"""``python -m pipetls``: the same as the ``pipetls`` command."""
import sys

from .cli import main

sys.exit(main())
