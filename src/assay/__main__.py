"""``python -m assay``."""

from assay._cli.main import main

main()
