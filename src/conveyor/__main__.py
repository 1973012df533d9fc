"""`python -m conveyor` is the `conveyor` command."""

from conveyor.cli.app import main

main()
