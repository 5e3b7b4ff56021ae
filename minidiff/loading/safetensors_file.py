"""Reading and writing ``.safetensors`` files, checking every claim of the header before trusting it.

A safetensors file is three parts, nothing else:

    [ 8 bytes: N, little-endian u64 ][ N bytes: JSON header ][ data: raw tensor bytes, back to back ]

    header = {"__metadata__": {"format": "pt"},                      # optional, str -> str
              "conv_in.weight": {"dtype": "F32", "shape": [320, 4, 3, 3], "data_offsets": [0, 46080]}, ...}

Loading it runs no code (unlike pickle), but the header is still untrusted input: a damaged or hostile file
can declare a terabyte tensor or offsets outside the file. So ``read_safetensors_header`` checks every field
against the file size before a single tensor is allocated, and any problem is a ``CheckpointError`` that names
the file. The rules are those of the safetensors format: the tensors' byte ranges must tile the data section
exactly (no overlap, no gap, nothing past the end), which also rules out files that hide a second format.
"""

import json
import math
import os
import struct
from dataclasses import dataclass

import torch

from minidiff.atomic import atomic_file
from minidiff.loading.state_dict import CheckpointError

# Largest header accepted (the format's own limit): a real SD checkpoint's header is about 100 KB.
MAX_HEADER_BYTES = 100_000_000

# safetensors dtype name -> torch dtype. The bytes per element come from the torch dtype.
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's line in the header: its dtype name, shape, and byte range [begin, end) in the data section."""

    dtype: str
    shape: tuple
    begin: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header: the ``__metadata__`` map, the tensors by name, and where the data section starts."""

    metadata: dict
    tensors: dict
    data_start: int


def human_bytes(n):
    """1234567 -> '1.2 MB' (powers of 1000, as file browsers show sizes)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000


def _no_duplicate_keys(pairs):
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"the key {next(k for k in keys if keys.count(k) > 1)!r} appears twice")
    return dict(pairs)


def _is_count(x):
    """A JSON non-negative integer (JSON true/false are not numbers, although Python's bool is an int)."""
    return type(x) is int and x >= 0


def _check_entry(name, entry):
    """Check one tensor's header fields (types, dtype, byte count); return a TensorEntry or raise ValueError."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"tensor {name!r} must be an object with exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"tensor {name!r} has dtype {dtype!r}; known dtypes are {', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise ValueError(f"tensor {name!r} has shape {shape!r}, which is not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise ValueError(f"tensor {name!r} has data_offsets {offsets!r}, which is not [begin, end]")
    begin, end = offsets
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if end < begin or end - begin != nbytes:
        raise ValueError(
            f"tensor {name!r} ({dtype}, shape {shape}) needs {human_bytes(nbytes)} but its data_offsets "
            f"[{begin}, {end}] give {human_bytes(max(end - begin, 0))}"
        )
    return TensorEntry(dtype, tuple(shape), begin, end)


def read_safetensors_header(path):
    """Read and validate the header of a safetensors file without reading any tensor data.

    Raises CheckpointError("<file>: <problem>") for anything the format does not allow. Returns a
    SafetensorsHeader whose tensor byte ranges are known to tile the file's data section exactly.
    """
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file.")
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        if file_size < 8:
            raise CheckpointError(f"{name}: the file is {file_size} bytes, too short to be a safetensors file.")
        (n,) = struct.unpack("<Q", f.read(8))  # header length, little-endian unsigned 64-bit
        if n > file_size - 8:
            raise CheckpointError(
                f"{name}: the header declares {human_bytes(n)} but the file is {human_bytes(file_size)}; "
                "the file is truncated or not a safetensors file."
            )
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(
                f"{name}: the header declares {human_bytes(n)}, more than the {human_bytes(MAX_HEADER_BYTES)} "
                "a safetensors header may have; the file is damaged or not a safetensors file."
            )
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
        if not text.startswith("{"):
            raise ValueError("it does not start with '{'")
        header = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(
            f"{name}: the header is not a valid UTF-8 JSON object ({exc}); the file is damaged or not a "
            "safetensors file."
        ) from None

    try:
        metadata = header.pop("__metadata__", {})
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise ValueError("__metadata__ must map strings to strings")
        tensors = {key: _check_entry(key, entry) for key, entry in header.items()}
    except ValueError as exc:
        raise CheckpointError(f"{name}: invalid header: {exc}.") from None

    data_size = file_size - 8 - n
    position = 0  # the byte ranges, sorted, must follow each other with no gap or overlap
    for key, t in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if t.begin != position:
            problem = "overlaps the tensor before it" if t.begin < position else f"leaves a gap at byte {position}"
            raise CheckpointError(f"{name}: tensor {key!r} starts at byte {t.begin} and {problem}.")
        if t.end > data_size:
            raise CheckpointError(
                f"{name}: tensor {key!r} ends at byte {t.end} but the data section is {human_bytes(data_size)}; "
                "the file is truncated or not a safetensors file."
            )
        position = t.end
    if position != data_size:
        raise CheckpointError(
            f"{name}: the tensors cover {position} bytes but the data section is {data_size} bytes; "
            "the file has trailing data or is not a safetensors file."
        )
    return SafetensorsHeader(metadata, tensors, data_start=8 + n)


def read_safetensors(path, device="cpu", dtype=None):
    """Load every tensor of a safetensors file after validating its header: {name: tensor}.

    dtype, if given, converts floating-point tensors only (integer buffers keep their type).
    """
    header = read_safetensors_header(path)
    tensors = {}
    with open(path, "rb") as f:
        for key, entry in header.tensors.items():
            tensor = torch.empty(entry.shape, dtype=DTYPES[entry.dtype])
            f.seek(header.data_start + entry.begin)
            read = f.readinto(tensor.reshape(-1).view(torch.uint8).numpy())  # the bytes go straight into the tensor
            if read != entry.end - entry.begin:
                raise CheckpointError(f"{os.path.basename(path)}: the file got shorter while it was being read.")
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            tensors[key] = tensor.to(device)
    return tensors


def write_safetensors(tensors, path, metadata=None):
    """Write {name: tensor} as a safetensors file, atomically: a temporary file in the same folder, then rename.

    A crash mid-write leaves the old file (or none), never a half-written one. metadata: optional {str: str}.
    """
    if "__metadata__" in tensors:
        raise ValueError("'__metadata__' is reserved in safetensors files; give the tensor another name.")
    metadata = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError("safetensors metadata must map strings to strings, e.g. {'format': 'pt'}.")
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for key in sorted(tensors):
        t = tensors[key]
        if t.dtype not in DTYPE_NAMES:
            raise ValueError(f"tensor {key!r} has dtype {t.dtype}, which safetensors cannot store here.")
        nbytes = t.numel() * t.element_size()
        header[key] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # pad so the data section starts 8-byte aligned

    with atomic_file(path) as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for key in sorted(tensors):
            t = tensors[key].detach().to("cpu").contiguous()
            f.write(t.reshape(-1).view(torch.uint8).numpy())


# A large network can be split into several files ("shards") plus an index, as diffusers and transformers do:
#     diffusion_pytorch_model-00001-of-00002.safetensors, diffusion_pytorch_model-00002-of-00002.safetensors,
#     diffusion_pytorch_model.safetensors.index.json = {"metadata": {"total_size": bytes},
#                                                       "weight_map": {"conv_in.weight": "...-00001-of-00002...", ...}}
INDEX_SUFFIX = ".safetensors.index.json"


def read_sharded_safetensors(index_path, device="cpu", dtype=None):
    """Load every tensor of a sharded checkpoint from its ``*.safetensors.index.json``: {name: tensor}.

    The index is untrusted too: each shard must be a file in the index's own folder, hold exactly the tensors the
    index assigns to it, and together the shards must hold every tensor the index names.
    """
    index_path = str(index_path)
    folder, name = os.path.split(index_path)
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{name}: not a safetensors index with a 'weight_map' ({exc}).") from None
    tensors = {}
    for shard in shards:
        if not isinstance(shard, str) or os.path.basename(shard) != shard or not shard.endswith(".safetensors"):
            raise CheckpointError(f"{name}: the shard {shard!r} is not a .safetensors file name in the same folder.")
        for key, tensor in read_safetensors(os.path.join(folder, shard), device, dtype).items():
            if weight_map.get(key) != shard:
                raise CheckpointError(f"{shard}: holds {key!r}, which {name} places elsewhere or not at all.")
            tensors[key] = tensor
    missing = sorted(weight_map.keys() - tensors.keys())
    if missing:
        raise CheckpointError(f"{name}: {len(missing)} tensors are in no shard, e.g. {missing[0]!r}.")
    return tensors


def write_sharded_safetensors(tensors, folder, stem, max_shard_bytes, metadata=None):
    """Write {name: tensor} as ``{stem}.safetensors`` in ``folder`` or, when the tensors take more than
    ``max_shard_bytes``, as shards of at most that size (a larger single tensor gets a shard of its own) with
    ``{stem}.safetensors.index.json``. Returns the paths written."""
    sizes = {key: t.numel() * t.element_size() for key, t in tensors.items()}
    if sum(sizes.values()) <= max_shard_bytes:
        path = os.path.join(folder, f"{stem}.safetensors")
        write_safetensors(tensors, path, metadata)
        return [path]
    groups, size = [{}], 0
    for key in sorted(tensors):  # the order write_safetensors stores them in
        if groups[-1] and size + sizes[key] > max_shard_bytes:
            groups.append({})
            size = 0
        groups[-1][key] = tensors[key]
        size += sizes[key]
    paths, weight_map = [], {}
    for i, group in enumerate(groups, 1):
        shard = f"{stem}-{i:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors(group, os.path.join(folder, shard), metadata)
        weight_map.update(dict.fromkeys(group, shard))
        paths.append(os.path.join(folder, shard))
    index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
    paths.append(os.path.join(folder, stem + INDEX_SUFFIX))
    with open(paths[-1], "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
    return paths
