"""The benchmark harness: `make bench` (python -m bench). Separate from the tests:
it measures, it asserts nothing. Imports everything; nothing imports it."""
