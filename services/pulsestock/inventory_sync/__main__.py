"""`python -m pulsestock.inventory_sync`: serve the gRPC API and run the background roles."""

from pulsestock.inventory_sync.bootstrap import build
from pulsestock.runtime import main

if __name__ == "__main__":
    main(build)
