"""Shared pytest configuration for the whole suite.

The `emulator` and `emulator_factory` fixtures come from the emulator's pytest plugin, named
here (it is no automatic `pytest11` entry point).
"""

# moto's S3 server and versioned buckets for the object-storage tests (tests/s3_fixtures.py)
pytest_plugins = ["tests.s3_fixtures", "logsearch_emulator.pytest_plugin"]
