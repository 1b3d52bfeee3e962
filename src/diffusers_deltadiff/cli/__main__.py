"""`python -m diffusers_deltadiff.cli ...`, as `torchrun` and `accelerate launch` start the command."""

import sys

from . import main


sys.exit(main())
