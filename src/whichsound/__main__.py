"""Allow ``python -m whichsound``."""
from whichsound.cli import main

main()
