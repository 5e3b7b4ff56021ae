# %% [markdown]
# # Lesson 11: real checkpoints
#
# Everything so far ran on small random or self-trained networks. Real Stable Diffusion weights come as files
# of a few gigabytes from strangers on the internet, in several formats and two naming schemes. This notebook
# opens those files up: what a safetensors file is byte by byte, why a pickle checkpoint can run code (and how
# minidiff refuses it), what float16, bfloat16 and 8-bit weights lose, how the names of the original single
# file map to diffusers' names, how big the real SD 1.5 networks are (without allocating them), and how
# minidiff is checked against diffusers. The text is `lessons/11-real-checkpoints.md`.

# %%
import pickle
import sys
import pickletools
import struct
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from minidiff.loading import CheckpointError, read_pickle_checkpoint, read_safetensors, write_safetensors
from minidiff.loading.safetensors_file import read_safetensors_header
from minidiff.loading.single_file import rename_table
from minidiff.models.clip import CLIPTextModel
from minidiff.models.config import CLIPTextConfig, UNetConfig, VAEConfig
from minidiff.models.unet import UNet2DConditionModel
from minidiff.models.vae import AutoencoderKL

scratch = Path(tempfile.mkdtemp(prefix="minidiff-lesson11-"))  # every file of this notebook goes here

# %% [markdown]
# ## A safetensors file, byte by byte
#
# Eight bytes give the length N of a JSON header (a little-endian unsigned 64-bit integer); the header names each
# tensor with its dtype, shape and byte range; then come the raw numbers, back to back. Reading it means parsing
# JSON and copying bytes: nothing in the file is ever executed.

# %%
tensors = {"conv.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "conv.bias": torch.ones(2).half()}
path = scratch / "tiny.safetensors"
write_safetensors(tensors, path, metadata={"format": "pt"})
raw = path.read_bytes()
(n,) = struct.unpack("<Q", raw[:8])
print(f"file size {len(raw)} bytes")
print(f"bytes 0-7   {raw[:8].hex(' ')}   -> header length N = {n}")
print(f"bytes 8-{8 + n - 1}  {raw[8:8 + n].decode()}")
print(f"the rest    {raw[8 + n:].hex(' ')}")
print("read back:", read_safetensors(path))

# %% [markdown]
# The header is still untrusted input. minidiff checks every claim in it against the file before allocating
# anything; a truncated download, for example, is caught with a message that names the problem:

# %%
damaged = scratch / "truncated.safetensors"
damaged.write_bytes(raw[:-4])
try:
    read_safetensors_header(damaged)
except CheckpointError as error:
    print("CheckpointError:", error)

# %% [markdown]
# ## Why a pickle checkpoint can run code
#
# `.ckpt`, `.pt` and `.bin` files are written by `torch.save`, which uses Python's pickle. A pickle is a small
# program for a stack machine, and one of its instructions is "call this function with these arguments": any
# object can ask for it through `__reduce__`. Here is a harmless payload that only prints a line.

# %%
class Payload:
    def __reduce__(self):
        return (print, ("this line was printed by the file while it was being loaded",))


data = pickle.dumps({"weight": [0.1, 0.2], "surprise": Payload()})
pickletools.dis(data)  # look for STACK_GLOBAL 'builtins' 'print', then REDUCE: the call
print("--- pickle.loads:")
pickle.loads(data)

# %% [markdown]
# Had the payload named `os.system` instead of `print`, loading would have run a shell command. The same
# happens in a checkpoint: `torch.load` with its full unpickler runs the call. minidiff refuses pickle files
# unless asked, and even then reads them with PyTorch's restricted "weights only" unpickler, which refuses to
# call anything that is not a tensor or a plain container.

# %%
checkpoint = scratch / "model.ckpt"
torch.save({"state_dict": {"weight": torch.ones(2)}, "surprise": Payload()}, checkpoint)
print("--- torch.load(weights_only=False), the full unpickler:")
torch.load(checkpoint, weights_only=False)
for allow_pickle in (False, True):
    print(f"--- minidiff, allow_pickle={allow_pickle}:")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_pickle_checkpoint(str(checkpoint), allow_pickle=allow_pickle)
    except CheckpointError as error:
        print("CheckpointError:", error)

# %% [markdown]
# ## float16, bfloat16: range and rounding
#
# Half-precision files are half the size. The two 16-bit formats split their bits differently: float16 has 10
# bits of mantissa and 5 of exponent (fine steps, small range: above 65504 it overflows to inf), bfloat16 has 7
# and 8 (float32's range, coarse steps).

# %%
print(f"{'dtype':10s} {'bits':>4s} {'largest':>12s} {'smallest normal':>16s} {'eps (step at 1)':>16s}")
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    info = torch.finfo(dtype)
    print(f"{str(dtype)[6:]:10s} {info.bits:4d} {info.max:12.4g} {info.tiny:16.4g} {info.eps:16.4g}")
big = torch.tensor([1000.0, 70000.0, 1e20])
print("\n70000 and 1e20 in float16:", big.half().tolist(), "  in bfloat16:", big.bfloat16().tolist())

weights = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0)) * 0.02  # like a layer's weights
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
for dtype in (torch.float16, torch.bfloat16):
    relative = ((weights.to(dtype).float() - weights) / weights).abs()
    print(f"{str(dtype)[6:]:9s} relative rounding error: median {relative.median():.1e}, max {relative.max():.1e}")
    axes[0].hist(relative.clamp(min=1e-9).log10().numpy(), bins=100, alpha=0.6, label=str(dtype)[6:])
axes[0].set(title="relative rounding error of N(0, 0.02²) weights", xlabel="log10 |error| / |weight|")
axes[0].legend()
grid = torch.linspace(0.9, 1.1, 2001)
for dtype in (torch.float16, torch.bfloat16):
    axes[1].step(grid, grid.to(dtype).float(), where="mid", label=str(dtype)[6:])
axes[1].set(title="the representable numbers near 1", xlabel="x", ylabel="x rounded")
axes[1].legend()
fig.tight_layout()
savefig(fig, "11-float-formats.png")
plt.show()

# %% [markdown]
# ## 8-bit weights
#
# Quantizing to int8 stores each weight as one of 255 levels, w ≈ scale · round(w / scale), with
# scale = max|w| / 127. One scale for the whole matrix wastes levels when a few weights are large (real networks
# have such outliers); one scale per output row adapts to each row's range. Below, a 320 x 320 matrix with a few
# outlier rows and scattered large weights.

# %%
g = torch.Generator().manual_seed(1)
W = torch.randn(320, 320, generator=g) * 0.02
W[torch.randint(320, (8,), generator=g)] *= 8  # a few rows with a larger range
W.view(-1)[torch.randint(W.numel(), (20,), generator=g)] = 0.4  # and scattered outliers


def quantize_int8(w, per_row):
    """Round to int8 with scale = max|w| / 127 (per row or for the whole matrix); return the dequantized weights."""
    scale = (w.abs().amax(dim=1, keepdim=True) if per_row else w.abs().max()) / 127
    q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)  # what would be stored: 1 byte per weight
    return q.float() * scale


x = torch.randn(320, 64, generator=g)  # some inputs
fig, ax = plt.subplots(figsize=(6, 3.2))
for label, approx in (("float16", W.half().float()), ("int8, one scale", quantize_int8(W, per_row=False)),
                      ("int8, a scale per row", quantize_int8(W, per_row=True))):
    error = approx - W
    output_error = (approx @ x - W @ x).norm() / (W @ x).norm()
    print(f"{label:22s} weight error: relative {error.norm() / W.norm():.2e}, max {error.abs().max():.1e};"
          f"  output W x relative error {output_error:.2e}")
    ax.hist(error.abs().clamp(min=1e-8).log10().flatten().numpy(), bins=80, alpha=0.6, label=label)
ax.set(title="|error| of each weight", xlabel="log10 |w_quantized - w|")
ax.legend(fontsize=8)
fig.tight_layout()
savefig(fig, "11-int8.png")
plt.show()

# %% [markdown]
# ## Two naming schemes: the rename table
#
# A diffusers folder keeps each network in its own file with diffusers' module names
# (`down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_q.weight`). A single-file checkpoint (the original
# CompVis code's format, used by most downloads) keeps all three networks in one file under the original names
# (`model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_q.weight`). minidiff builds one explicit
# table of module prefixes from the configs and uses it in both directions.

# %%
configs = {"unet": UNetConfig().to_dict(), "vae": VAEConfig().to_dict(), "text_encoder": CLIPTextConfig().to_dict()}
table = rename_table(configs, "sd1")
print(f"{len(table)} rows for SD 1.5 (each maps a module prefix, so every parameter under it follows)\n")
for row in table:
    if row.original.endswith(("input_blocks.1.0.in_layers.0", "input_blocks.1.1", "input_blocks.3.0.op",
                              "output_blocks.2.1.conv", "output_blocks.5.2.conv", "middle_block.1",
                              "mid.attn_1.q", "decoder.up.3.block.0.conv1", "text_model")):
        how = "" if row.how == "same" else f"   [{row.how}: (C, C, 1, 1) conv <-> (C, C) linear]"
        print(f"{row.original:58s} -> {row.component}: {row.diffusers}{how}")

# %% [markdown]
# ## The real SD 1.5 networks, without their memory
#
# On PyTorch's `meta` device a module gets shapes but no storage, so the full-size networks build in an instant
# and cost no memory: enough to count parameters and check that a file's shapes fit before reading it.

# %%
with torch.device("meta"):
    networks = {"text encoder (CLIP ViT-L/14)": CLIPTextModel(CLIPTextConfig()),
                "VAE": AutoencoderKL(VAEConfig()),
                "U-Net": UNet2DConditionModel(UNetConfig())}
for name, network in networks.items():
    count = sum(p.numel() for p in network.parameters())
    print(f"{name:28s} {count / 1e6:8.2f} M parameters = {count * 4 / 1e9:.2f} GB in float32, "
          f"{count * 2 / 1e9:.2f} GB in float16")
unet = networks["U-Net"]
print("\nU-Net parameters per top-level module:")
for name, module in unet.named_children():
    print(f"  {name:18s} {sum(p.numel() for p in module.parameters()) / 1e6:8.2f} M")
print("\nsome shapes:")
for key in ("conv_in.weight", "time_embedding.linear_1.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", "mid_block.resnets.0.conv1.weight"):
    print(f"  {key:66s} {tuple(unet.state_dict()[key].shape)}")

# %% [markdown]
# ## Checking minidiff against diffusers
#
# `python -m minidiff verify PATH` loads a model into minidiff and into diffusers/transformers, runs both on the
# same seeded inputs and reports the largest difference of every network and every sampler. Here it runs on a
# tiny random Stable Diffusion (the one the tests use), saved as a diffusers folder.

# %%
sys.path.insert(0, str(ROOT / "tests"))
from tiny_pipeline import save_tiny_model  # noqa: E402  (tests/ is not a package)

from minidiff.tools.verify import verify  # noqa: E402

tiny = save_tiny_model(scratch / "tiny-sd")
print("files:", sorted(str(p.relative_to(tiny)) for p in tiny.rglob("*") if p.is_file()), "\n")
checks = verify(str(tiny), steps=2)
print(f"\n{sum(c.passed for c in checks)} of {len(checks)} checks passed")
