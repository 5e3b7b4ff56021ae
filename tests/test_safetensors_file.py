"""The safetensors reader validates every header field before allocating, and agrees with safetensors' loader.

Hand-made broken files each get a CheckpointError naming the file and the problem, quickly and without a large
allocation; hypothesis then mutates valid files at random: minidiff's reader must either load exactly what
``safetensors.torch.load_file`` loads or raise CheckpointError, never another exception.
"""

import json
import os
import struct
import time
import tracemalloc

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from minidiff.loading.safetensors_file import (
    DTYPES,
    MAX_HEADER_BYTES,
    read_safetensors,
    read_safetensors_header,
    write_safetensors,
)
from minidiff.loading.state_dict import CheckpointError


def example_tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "norm.bias": torch.randn(7, generator=g).to(torch.float16),
        "emb": torch.randn(5, 2, generator=g).to(torch.bfloat16),
        "position_ids": torch.arange(77).unsqueeze(0),
        "mask": torch.tensor([True, False, True]),
        "scale": torch.tensor(0.5, dtype=torch.float64),
        "empty": torch.zeros(0, 3),
        "fp8": torch.randn(6, generator=g).to(torch.float8_e4m3fn),
    }


def same_bytes(a, b):
    """Equal dtype, shape and bytes (NaN-proof, unlike ==)."""
    return a.dtype == b.dtype and a.shape == b.shape and bytes(a.reshape(-1).view(torch.uint8).numpy()) == bytes(
        b.reshape(-1).view(torch.uint8).numpy()
    )


def raw_file(path, header, data=b"", n=None):
    """Write 8-byte length + header (a dict, dumped as JSON, or raw bytes) + data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if n is None else n) + raw + data)
    return path


def test_round_trip_matches_safetensors_loader(tmp_path):
    tensors = example_tensors()
    path = tmp_path / "mine.safetensors"
    write_safetensors(tensors, path, metadata={"format": "pt", "note": "minidiff"})
    reference = load_file(path)
    loaded = read_safetensors(path)
    assert loaded.keys() == reference.keys() == tensors.keys()
    for key in tensors:
        assert same_bytes(loaded[key], reference[key]) and same_bytes(loaded[key], tensors[key]), key
    assert read_safetensors_header(path).metadata == {"format": "pt", "note": "minidiff"}

    save_file(tensors, tmp_path / "theirs.safetensors", metadata={"format": "pt"})
    theirs = read_safetensors(tmp_path / "theirs.safetensors")
    assert all(same_bytes(theirs[k], tensors[k]) for k in tensors)


def test_dtype_argument_converts_floating_tensors_only(tmp_path):
    path = tmp_path / "w.safetensors"
    write_safetensors(example_tensors(), path)
    loaded = read_safetensors(path, dtype=torch.float16)
    assert loaded["conv.weight"].dtype == torch.float16
    assert loaded["position_ids"].dtype == torch.int64 and loaded["mask"].dtype == torch.bool


def test_write_is_atomic(tmp_path):
    path = tmp_path / "w.safetensors"
    write_safetensors({"a": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="complex64"):
        write_safetensors({"a": torch.zeros(2), "z": torch.zeros(2, dtype=torch.complex64)}, path)
    assert os.listdir(tmp_path) == ["w.safetensors"]  # no temporary file left behind
    assert torch.equal(read_safetensors(path)["a"], torch.ones(2))  # the old file is intact


VALID_ENTRY = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
BROKEN_FILES = {
    # name: (header, data, expected message)
    "bad dtype": ({"w": {**VALID_ENTRY, "dtype": "F128"}}, bytes(16), "dtype 'F128'; known dtypes"),
    "wrong byte count": ({"w": {**VALID_ENTRY, "data_offsets": [0, 12]}}, bytes(12), "needs 16 bytes but"),
    "negative dim": ({"w": {**VALID_ENTRY, "shape": [-2, -2]}}, bytes(16), "not a list of non-negative"),
    "bool dim": ({"w": {**VALID_ENTRY, "shape": [True, 4]}}, bytes(16), "not a list of non-negative"),
    "float offsets": ({"w": {**VALID_ENTRY, "data_offsets": [0.0, 16.0]}}, bytes(16), "not \\[begin, end\\]"),
    "missing field": ({"w": {"dtype": "F32", "shape": [4]}}, bytes(16), "exactly dtype, shape and data_offsets"),
    "overlap": (
        {"a": VALID_ENTRY, "b": {**VALID_ENTRY, "data_offsets": [8, 24]}},
        bytes(24),
        "'b' starts at byte 8 and overlaps",
    ),
    "gap": ({"w": {**VALID_ENTRY, "data_offsets": [4, 20]}}, bytes(20), "leaves a gap at byte 0"),
    "past the end": ({"w": VALID_ENTRY}, bytes(8), "ends at byte 16 but the data section is 8 bytes"),
    "trailing data": ({"w": VALID_ENTRY}, bytes(20), "cover 16 bytes but the data section is 20"),
    "metadata not str": ({"__metadata__": {"step": 3}, "w": VALID_ENTRY}, bytes(16), "__metadata__ must map"),
    "json array": (b"[1, 2, 3]", b"", "does not start with"),
    "not json": (b"{this is not json}", b"", "not a valid UTF-8 JSON object"),
    "not utf-8": (b"{\xff\xfe}", b"", "not a valid UTF-8 JSON object"),
    "duplicate key": (b'{"w": {}, "w": {}}', b"", "appears twice"),
    "deep nesting": (b"{" + b'"a":[' * 100_000 + b"]" * 100_000 + b"}", b"", "not a valid UTF-8 JSON object"),
}


@pytest.mark.parametrize("case", list(BROKEN_FILES))
def test_broken_header_is_a_clear_error(tmp_path, case):
    header, data, message = BROKEN_FILES[case]
    path = raw_file(tmp_path / "weights.safetensors", header, data)
    with pytest.raises(CheckpointError, match=r"^weights\.safetensors: .*" + message):
        read_safetensors(path)


def test_truncated_file_and_garbage_are_clear_errors(tmp_path):
    path = tmp_path / "weights.safetensors"
    write_safetensors({"w": torch.randn(64, 64)}, path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="weights.safetensors: tensor 'w' ends at byte 16384.*truncated"):
        read_safetensors(path)
    path.write_bytes(whole[:50])
    with pytest.raises(CheckpointError, match="header declares .* but the file is 50 bytes; the file is truncated"):
        read_safetensors(path)
    path.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="3 bytes, too short"):
        read_safetensors(path)
    path.write_bytes(os.urandom(1) + b"garbage: a JPEG, an HTML error page, a pickle" * 10)
    with pytest.raises(CheckpointError, match="weights.safetensors: "):
        read_safetensors(path)


def test_header_length_beyond_the_file_names_both_sizes(tmp_path):
    path = raw_file(tmp_path / "weights.safetensors", b"{}" + bytes(1_200_000), n=3_200_000_000_000)
    with pytest.raises(CheckpointError, match="header declares 3.2 TB but the file is 1.2 MB; the file is truncated"):
        read_safetensors_header(path)


def test_header_over_the_cap_is_refused_before_reading_it(tmp_path):
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", MAX_HEADER_BYTES + 1))
        f.truncate(MAX_HEADER_BYTES + 100)  # sparse: no disk used
    tracemalloc.start()
    with pytest.raises(CheckpointError, match="more than the 100.0 MB a safetensors header may have"):
        read_safetensors_header(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000


def test_terabyte_tensor_fails_fast_without_allocating(tmp_path):
    terabytes = 250_000_000_000  # x 4 bytes = 1 TB
    header = {"w": {"dtype": "F32", "shape": [terabytes], "data_offsets": [0, 4 * terabytes]}}
    path = raw_file(tmp_path / "weights.safetensors", header, bytes(64))
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="tensor 'w' ends at byte 1000000000000 but the data section is 64"):
        read_safetensors(path)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 1_000_000


# ----------------------------------------------------------------- fuzzing against the reference loader

def check_against_reference(path):
    """minidiff loads exactly what safetensors loads, or raises CheckpointError; nothing else is allowed."""
    try:
        mine = read_safetensors(path)
    except CheckpointError:
        return
    reference = load_file(path)  # must not raise: minidiff accepted the file, so it must be valid
    assert mine.keys() == reference.keys()
    assert all(same_bytes(mine[k], reference[k]) for k in mine)


VALUES = st.one_of(
    st.integers(-3, 2**70),
    st.lists(st.integers(-2, 2**34), max_size=4),
    st.sampled_from([*DTYPES, "F128", "f32", "", "U32"]),
    st.text(max_size=6),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "valid.safetensors"
    save_file({k: v for k, v in example_tensors().items() if k != "fp8"}, path, metadata={"format": "pt"})
    return path.read_bytes()


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data())
def test_fuzz_header_fields(valid_file, tmp_path, data):
    (n,) = struct.unpack("<Q", valid_file[:8])
    header = json.loads(valid_file[8 : 8 + n])
    for _ in range(data.draw(st.integers(1, 3))):
        name = data.draw(st.sampled_from(sorted(header)))
        field = data.draw(st.sampled_from(["same-size dtype", "dtype", "shape", "data_offsets", "extra", None]))
        if field is None:
            header[name] = data.draw(VALUES)
        elif field == "same-size dtype":  # still a valid file: F32 -> I32, F16 -> BF16...
            if not isinstance(header[name], dict) or not isinstance(header[name].get("dtype"), str) \
                        or header[name]["dtype"] not in DTYPES:
                continue
            size = DTYPES[header[name]["dtype"]].itemsize
            header[name]["dtype"] = data.draw(st.sampled_from([d for d, t in DTYPES.items() if t.itemsize == size]))
        elif isinstance(header[name], dict):
            header[name][field] = data.draw(VALUES)
    raw = json.dumps(header).encode()
    body = valid_file[8 + n :]
    cut = data.draw(st.integers(0, len(body)))
    path = raw_file(tmp_path / "f.safetensors", raw, body[:cut] if data.draw(st.booleans()) else body)
    check_against_reference(path)


@FUZZ
@given(data=st.data())
def test_fuzz_bytes(valid_file, tmp_path, data):
    raw = bytearray(valid_file)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip data", "flip", "insert", "delete", "truncate"]))
        if action == "flip data":  # still a valid file, with other numbers
            raw[len(raw) - 1 - position % 1000] = data.draw(st.integers(0, 255))
        elif action == "flip":
            raw[position] = data.draw(st.integers(0, 255))
        elif action == "insert":
            raw[position:position] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del raw[position : position + data.draw(st.integers(1, 8))]
        else:
            del raw[position:]
        if not raw:
            break
    path = tmp_path / "f.safetensors"
    path.write_bytes(bytes(raw))
    check_against_reference(path)


@FUZZ
@given(raw=st.binary(max_size=200), n=st.integers(0, 300))
def test_fuzz_random_bytes(tmp_path, raw, n):
    path = tmp_path / "f.safetensors"
    path.write_bytes(struct.pack("<Q", n) + raw)
    check_against_reference(path)
