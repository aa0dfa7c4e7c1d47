import pytest


@pytest.fixture(autouse=True, scope="module")
def train_tests_one_thread(one_thread):
    """Every training test runs on one intra-op thread (the fixture lives in tests/conftest.py)."""
    yield
