"""`python -m pulsestock.ingest`: serve the gRPC API and run the background roles."""

from pulsestock.ingest.bootstrap import build
from pulsestock.runtime import main

if __name__ == "__main__":
    main(build)
