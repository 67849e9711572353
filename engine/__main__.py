"""``python -m engine`` is ``etalage``."""

from engine.cli import main

main()
