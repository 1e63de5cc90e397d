"""`python -m pulsestock.fulfillment`: serve the gRPC API and run the background roles."""

from pulsestock.fulfillment.bootstrap import build
from pulsestock.runtime import main

if __name__ == "__main__":
    main(build)
