import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One BLAS/OpenMP thread: the test machine is shared, and oversubscribed OpenMP is 10x slower."""
    with threadpool_limits(limits=1):
        yield
