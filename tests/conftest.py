import os

# Tests never reach a model hub: every reference model is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("MPLBACKEND", "Agg")

# Property-based tests draw the same examples on every run, so CI results are reproducible.
from hypothesis import settings  # noqa: E402

settings.register_profile("minidiff", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("minidiff")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def torch_threads(request):
    """A test module that sets ``ONE_THREAD = True`` runs on one CPU thread, the count restored afterwards.

    Tiny networks and one small image at a time run faster on one thread (a second thread only adds waiting,
    a lot of it on a busy machine), and the numbers do not depend on the thread count.
    """
    if not getattr(request.module, "ONE_THREAD", False):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
