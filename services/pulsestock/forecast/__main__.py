"""`python -m pulsestock.forecast`: serve the gRPC API and run the background roles."""

from pulsestock.forecast.bootstrap import build
from pulsestock.runtime import main

if __name__ == "__main__":
    main(build)
