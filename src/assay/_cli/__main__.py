"""``python -m assay._cli``."""

from assay._cli.main import main

main()
