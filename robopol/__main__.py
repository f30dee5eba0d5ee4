"""`python -m robopol ...`, the form torchrun launches: `torchrun --nproc_per_node 2 -m robopol train ...`."""

import sys

from robopol.cli import main

sys.exit(main())
