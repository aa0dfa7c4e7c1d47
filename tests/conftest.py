import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: these small ops only lose to oversubscription on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
