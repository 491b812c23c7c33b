"""`python -m dotshop ...` is the `dotshop` command (how `dotshop up` starts its children)."""

from dotshop.cli import main

main()
