"""``python -m jpki``: the jpki command line."""
import sys

from jpki.cli import main

sys.exit(main())
