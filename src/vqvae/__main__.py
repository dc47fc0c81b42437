"""``python -m vqvae ...`` is the ``vqvae`` command."""

import sys

from vqvae.cli import main

sys.exit(main())
