"""Shared pytest configuration: fixture plugins for the real peers on loopback."""

pytest_plugins = [
    "fixtures.pki",
    "fixtures.mail",
    "fixtures.synapse",
    "fixtures.database",
]
