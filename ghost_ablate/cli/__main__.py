"""`python -m ghost_ablate.cli`."""
import sys

from . import main

sys.exit(main())
