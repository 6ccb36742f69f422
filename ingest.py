"""Add articles to the index: the same as `qa ingest` (see `python ingest.py --help`)."""

import sys

from qa.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
