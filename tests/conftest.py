"""Shared pytest configuration for the whole suite.

The `emulator` and `emulator_factory` fixtures come from the logsearch-emulator distribution's
pytest plugin (entry point `pytest11`), loaded because the emulator is installed.
"""

# moto's S3 server and versioned buckets for the object-storage tests (tests/s3_fixtures.py)
pytest_plugins = ["tests.s3_fixtures"]
