"""Pickle checkpoints are refused by default, and even when allowed they never run code from the file.

The malicious file below is real: a full unpickler runs its command (checked in a subprocess, so the test
proves the payload works); minidiff's reader must never create the marker, whether pickle is allowed or not.
"""

import os
import pickle
import subprocess
import sys
import warnings

import pytest
import torch

from minidiff.loading.pickle_file import read_pickle_checkpoint
from minidiff.loading.state_dict import CheckpointError


class Payload:
    """Unpickling this object calls os.system(command): what a hostile .ckpt would do."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture
def malicious_files(tmp_path):
    marker = tmp_path / "MARKER"
    payload = Payload(f"touch {marker}")
    as_torch = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hook": payload}, as_torch)
    as_pickle = tmp_path / "pytorch_model.bin"
    with open(as_pickle, "wb") as f:
        pickle.dump({"w": payload}, f, protocol=2)  # the protocol torch.save uses
    assert not marker.exists()
    return marker, [as_torch, as_pickle]


def test_the_payload_really_runs_under_a_full_unpickler(malicious_files):
    marker, files = malicious_files
    code = f"import torch; torch.load({str(files[0])!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True)
    assert marker.exists()  # so the checks below could fail


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_malicious_pickle_never_runs(malicious_files, allow_pickle):
    marker, files = malicious_files
    for path in files:
        with warnings.catch_warnings(record=True) as log, pytest.raises(CheckpointError) as error:
            warnings.simplefilter("always")
            read_pickle_checkpoint(path, allow_pickle=allow_pickle)
        assert bool(log) == allow_pickle  # refused before reading, or read with a warning
        message = str(error.value)
        assert message.startswith(path.name + ":")
        if allow_pickle:
            assert "refused this file" in message and "posix.system" in message
        else:
            assert "refusing to read a pickle checkpoint" in message
            assert "--allow-pickle" in message and "safetensors" in message
    assert not marker.exists()


def test_legitimate_checkpoint_loads_only_when_allowed(tmp_path):
    g = torch.Generator().manual_seed(0)
    weights = {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "ids": torch.arange(5)}
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": weights, "global_step": 1000}, path)  # a Lightning-style wrapper
    with pytest.raises(CheckpointError, match="refusing"):
        read_pickle_checkpoint(path)
    with pytest.warns(UserWarning, match="safetensors"):
        loaded = read_pickle_checkpoint(path, allow_pickle=True)
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)

    plain = tmp_path / "plain.pt"
    torch.save(weights, plain)
    with pytest.warns(UserWarning):
        assert read_pickle_checkpoint(plain, allow_pickle=True).keys() == weights.keys()


def test_damaged_or_missing_pickle_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        read_pickle_checkpoint(tmp_path / "absent.ckpt", allow_pickle=True)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"<html>404 Not Found</html>")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="damaged.pt: (not a readable|.* refused)"):
        read_pickle_checkpoint(damaged, allow_pickle=True)

