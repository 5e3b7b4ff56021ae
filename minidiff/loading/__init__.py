"""Reading and writing checkpoints safely.

    safetensors_file   .safetensors: the header is validated before any tensor is allocated
    pickle_file        .ckpt/.pt/.bin: refused unless allow_pickle, then read weights-only (never runs code)
    state_dict         strict loading with errors that name the file, the keys and the likely cause
    single_file        the original CompVis/A1111 single-file names <-> diffusers names, and architecture inference
    components         a whole model (tokenizer, networks, scheduler config) read from a folder or a single file
    saving             the same written back, as a diffusers folder or a single file

Every problem with a file is a ``CheckpointError`` (a ValueError) whose message names the file.
"""

from minidiff.loading.pickle_file import read_pickle_checkpoint
from minidiff.loading.safetensors_file import read_safetensors, read_safetensors_header, write_safetensors
from minidiff.loading.single_file import infer_configs, join_original_checkpoint, split_original_checkpoint
from minidiff.loading.state_dict import CheckpointError, load_state_dict_strict
from minidiff.loading.components import Components, load_components
from minidiff.loading.saving import save_components, save_single_file

__all__ = [
    "CheckpointError",
    "Components",
    "infer_configs",
    "join_original_checkpoint",
    "load_components",
    "load_state_dict_strict",
    "read_pickle_checkpoint",
    "read_safetensors",
    "read_safetensors_header",
    "save_components",
    "save_single_file",
    "split_original_checkpoint",
    "write_safetensors",
]
