"""Shared pytest configuration for the whole suite.

The `emulator` and `emulator_factory` fixtures come from the emulator's pytest plugin, named
here (it is no automatic `pytest11` entry point).
"""

# moto's S3 server and versioned buckets for the object-storage tests (tests/s3_fixtures.py);
# fake-gcs-server, a bucket per test, for the gs:// tests (gcs_fixtures.py);
# a PostgreSQL server, one database per test, for a shared Iceberg catalog (postgres_fixtures.py);
# Azurite, a container per test, for the az:// tests (azure_fixtures.py)
pytest_plugins = [
    "tests.s3_fixtures",
    "tests.gcs_fixtures",
    "tests.postgres_fixtures",
    "tests.azure_fixtures",
    "logsearch_emulator.pytest_plugin",
]
