"""Shared pytest setup."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "network: needs a package registry (pip); skipped only when it cannot be reached")
