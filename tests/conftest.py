"""Shared pytest configuration for the whole suite."""

pytest_plugins = ["tap_rapid7.emulator.testing"]
