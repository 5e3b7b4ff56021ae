"""Reading pickle checkpoints (``.ckpt``, ``.pt``, ``.pth``, ``.bin``) only when asked to, and only restricted.

``torch.save`` writes Python's pickle format, and unpickling is running a program: a pickle may name any
Python function and the arguments to call it with (``os.system, ("rm -rf ~",)``), and a full unpickler calls
it while "loading". A downloaded ``.ckpt`` can therefore do anything your account can. A safetensors file is
only numbers plus a JSON header, so reading one can never run code.

minidiff refuses pickle files unless the caller opts in (``allow_pickle=True``, or ``--allow-pickle`` on the
command line), and even then loads them with ``torch.load(..., weights_only=True)``: PyTorch's restricted
unpickler, which rebuilds tensors and plain containers and refuses every other function a file names.
"""

import os
import pickle
import warnings

import torch

from minidiff.loading.state_dict import CheckpointError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def _refused_object(exc):
    """The line of torch's refusal that names the object the file asked for ("unsupported GLOBAL posix.system")."""
    lines = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "Unsupported" in line]
    return lines[0] if lines else "see torch.load's documentation of weights_only"


def read_pickle_checkpoint(path, allow_pickle=False):
    """Load a pickle checkpoint as {name: tensor}, refused unless ``allow_pickle``; never runs code from the file.

    Loading is ``torch.load(path, map_location="cpu", weights_only=True)``; a top-level ``"state_dict"`` entry
    (Lightning / CompVis checkpoints) is unwrapped. Entries that are not tensors (step counters) are dropped.
    """
    name = os.path.basename(path)
    if not allow_pickle:
        raise CheckpointError(
            f"{name}: refusing to read a pickle checkpoint. Unpickling can run any code the file names, so a "
            "downloaded .ckpt/.pt/.bin can act as a program; a .safetensors file holds only numbers and cannot. "
            "Prefer a .safetensors version of these weights. If you trust this file, opt in with "
            "allow_pickle=True (command line: --allow-pickle); it is then read with PyTorch's restricted "
            "weights-only unpickler."
        )
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file.")
    warnings.warn(
        f"{name}: reading a pickle checkpoint (weights-only mode, which refuses code but is a larger attack "
        "surface than safetensors, whose reader only parses JSON and copies bytes). Convert it once with "
        "`python -m minidiff convert` and use the .safetensors file from then on.",
        stacklevel=2,
    )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{name}: the weights-only unpickler refused this file ({_refused_object(exc)}): it asks for Python "
            "objects other than tensors and plain containers, or it is not a PyTorch checkpoint at all. It may "
            "be malicious, or store training state beside the weights; minidiff will not run it. Get a "
            ".safetensors version of these weights."
        ) from None
    except Exception as exc:  # torch.load fails on damaged files with many exception types
        raise CheckpointError(f"{name}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}).") from None

    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{name}: expected a dict of tensors (a state dict), found a {type(checkpoint).__name__}."
        )
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{name}: the checkpoint holds no tensors (keys: {sorted(map(str, checkpoint))[:10]}).")
    return tensors
