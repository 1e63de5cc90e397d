"""`python -m pulsestock.console` (or `pulsestock console`): the operator console."""

from pulsestock.console.bootstrap import main

if __name__ == "__main__":
    raise SystemExit(main())
