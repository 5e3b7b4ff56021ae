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
