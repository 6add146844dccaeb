"""The adapter's performance benchmark: `make bench` or `python -m bench`."""
