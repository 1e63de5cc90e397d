"""`python -m pulsestock.signal`: serve the gRPC API and run the background roles."""

from pulsestock.runtime import main
from pulsestock.signal.bootstrap import build

if __name__ == "__main__":
    main(build)
