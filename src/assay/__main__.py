"""``python -m assay``."""

from assay._cli.main import main

if __name__ == "__main__":
    main()
