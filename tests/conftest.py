"""Test setup: quiet TensorFlow, make tests/ importable (naive.py, fakes.py), shared fixtures."""

import os
import socket
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def no_network(monkeypatch):
    """Refuse network connections, and fail the test if any was attempted (even if swallowed)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access refused by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield attempts
    assert attempts == [], f"network access attempted: {attempts}"
