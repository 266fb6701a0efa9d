"""tests/perf is a benchmark (``python -m tests.perf.bench``), not a test suite: pytest collects
nothing here."""

collect_ignore_glob = ["*.py"]
