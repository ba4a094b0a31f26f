import os

# Keep TensorFlow's C++ start-up chatter out of test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, imported as pgrl's TensorFlow backend imports it (a real dependency)."""
    from pgrl.policies import tf_policy

    return tf_policy.tf


@pytest.fixture(scope="session")
def keras():
    from pgrl.policies import tf_policy

    return tf_policy.keras
