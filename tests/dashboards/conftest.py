"""The dashboards' tests read the session's pipeline-filled store (tests/conftest.py)."""
