"""`python -m pulsestock.collect` (or `pulsestock collect`): poll, push into ingest, serve the
gRPC API."""

from pulsestock.collect.bootstrap import build
from pulsestock.runtime import main

if __name__ == "__main__":
    main(build)
