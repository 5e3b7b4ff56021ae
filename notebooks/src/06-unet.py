# %% [markdown]
# # Lesson 6: the U-Net and cross-attention
#
# The U-Net is the network that does the denoising: given a noisy latent z_t, the timestep t and the prompt's
# 77 text vectors c, it predicts the noise ε_θ(z_t, t, c). This notebook takes it apart with the bundled shapes
# model (`weights/`) and with Stable Diffusion 1.5's U-Net built on PyTorch's `meta` device (shapes without
# memory): the timestep embedding, a ResNet block, the spatial transformer, the shapes through the whole network,
# and finally what each word of a prompt attends to while a picture is made. The text of the lesson is
# `lessons/06-unet.md`.

# %%
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from minidiff.data.captions import parse_prompt
from minidiff.data.detect import detect_objects, score
from minidiff.tools.evaluate import to_uint8
from minidiff.models import attention as attention_module
from minidiff.models.config import UNetConfig
from minidiff.models.embeddings import timestep_embedding
from minidiff.models.transformer import record_cross_attention
from minidiff.models.unet import UNet2DConditionModel
from minidiff.pipelines import StableDiffusion

torch.manual_seed(0)
sd = StableDiffusion.from_pretrained(ROOT / "weights")
unet = sd.unet.eval()
print(unet.config)

# %% [markdown]
# ## The timestep embedding
#
# The U-Net must know how noisy its input is. The timestep t (0 … 999) becomes a vector of sines and cosines at
# geometrically spaced frequencies, the same trick as a Transformer's positional encoding:
#
#     f_i = 10000^(-i / half),   emb(t) = [cos(t f_0), …, cos(t f_{half-1}), sin(t f_0), …, sin(t f_{half-1})]
#
# Fast channels tell nearby timesteps apart, slow channels say roughly where in the schedule t is; together the
# vector is unique for every t, and two timesteps close to each other get similar vectors. A small MLP
# (Linear → SiLU → Linear, `TimestepEmbedding`) then turns emb(t) into the vector every ResNet block receives:
# 4 × 320 = 1280 wide in Stable Diffusion, 4 × 64 = 256 in the bundled model.

# %%
t_all = torch.arange(1000)
emb = timestep_embedding(t_all, 320)  # (1000, 320), Stable Diffusion's width
with torch.no_grad():
    learned = unet.time_embedding(t_all)  # (1000, 256): the trained MLP of the bundled model


def cosine_similarity_matrix(v):
    v = F.normalize(v, dim=-1)
    return v @ v.T  # (N, N)


fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
axes[0].imshow(emb.T, aspect="auto", cmap="RdBu_r", interpolation="nearest")
axes[0].set(title="emb(t), 320 channels (cos | sin)", xlabel="t", ylabel="channel")
for i in (40, 60, 90, 120):
    axes[1].plot(t_all, emb[:, i], label=f"channel {i}: f = {10000 ** (-i / 160):.4f}")
axes[1].set(title="a few of the slower cosine channels", xlabel="t")
axes[1].legend(fontsize=7, loc="lower left")
for ax, v, title in ((axes[2], emb, "cos similarity of emb(t)"),
                     (axes[3], learned, "after the trained MLP (bundled)")):
    shown = ax.imshow(cosine_similarity_matrix(v[::10]), cmap="viridis", extent=(0, 1000, 1000, 0), vmin=0, vmax=1)
    ax.set(title=title, xlabel="t", ylabel="t'")
fig.colorbar(shown, ax=axes[3])
fig.tight_layout()
savefig(fig, "06-timestep-embedding.png")
plt.show()

# %% [markdown]
# ## A ResNet block, with the time
#
# A ResNet block (`ResnetBlock2D` in `minidiff/models/resnet.py`) is two GroupNorm → SiLU → 3×3 convolution steps
# and a residual connection. Between the two, the time embedding is projected to one number per channel and
# added everywhere in the picture: the timestep acts as a per-channel offset of the features.
#
#     h = conv1(SiLU(norm1(x))) + W_t SiLU(temb)        W_t: (C_out, 4·C0), broadcast over H and W
#     out = shortcut(x) + conv2(SiLU(norm2(h)))         shortcut: a 1×1 conv when C_in ≠ C_out
#
# Written out by hand for the first block of the bundled U-Net, it gives the module's output exactly.

# %%
block = unet.down_blocks[0].resnets[0]
x = torch.randn(1, 64, 16, 16)
with torch.no_grad():
    temb = unet.time_embedding(torch.tensor([500]))  # (1, 256)
    h = block.conv1(F.silu(block.norm1(x)))  # (1, 64, 16, 16)
    h = h + block.time_emb_proj(F.silu(temb))[:, :, None, None]  # + (1, 64, 1, 1): one offset per channel
    h = block.conv2(F.silu(block.norm2(h)))
    by_hand = x + h  # 64 -> 64 channels: no shortcut convolution
    print("by hand == ResnetBlock2D:", torch.allclose(by_hand, block(x, temb), atol=1e-6))

    offsets = block.time_emb_proj(F.silu(learned))  # (1000, 64): the offset of each channel at each t
    features = block.conv1(F.silu(block.norm1(x)))
print(f"offsets vary by {offsets.std(0).mean():.2f} (std over t, mean over channels); "
      f"the conv1 features they are added to have std {features.std():.2f}")

fig, ax = plt.subplots(figsize=(7, 2.6))
image = ax.imshow(offsets.T, aspect="auto", cmap="RdBu_r", interpolation="nearest")
ax.set(title="down_blocks.0.resnets.0: the time offset W_t SiLU(temb) of each channel", xlabel="t", ylabel="channel")
fig.colorbar(image, ax=ax)
fig.tight_layout()
savefig(fig, "06-resnet-time.png")
plt.show()

# %% [markdown]
# ## The spatial transformer
#
# After each ResNet block of the "CrossAttn" blocks comes a `Transformer2DModel` (minidiff/models/transformer.py):
# GroupNorm, a 1×1 convolution in, then the feature map is read as H·W tokens, one per position, and a transformer
# block runs over them:
#
#     x = x + SelfAttention(LayerNorm(x))             q, k, v from the pixels: every position looks at every other
#     x = x + CrossAttention(LayerNorm(x), c)         q from the pixels, k and v from the 77 text vectors
#     x = x + FeedForward(LayerNorm(x))               GEGLU: a · GELU(g), [a, g] = Linear(x), 4× wider inside
#
# then the tokens go back to a (C, H, W) map, a 1×1 convolution out, and a residual connection. Hooks on every
# layer of one transformer of the bundled U-Net (8 × 8 positions, 128 channels, 4 heads) show the shapes; the
# heads split each 128-wide q, k and v into 4 × 32.

# %%
transformer = unet.down_blocks[1].attentions[0]
context = torch.randn(1, 77, unet.config.cross_attention_dim)  # (1, 77, 256): stands in for the text states
shapes = []
hooks = [module.register_forward_hook(
             lambda m, inputs, output, name=name: shapes.append((name, tuple(inputs[0].shape), tuple(output.shape))))
         for name, module in transformer.named_modules() if name and not list(module.children())]
with torch.no_grad():
    transformer(torch.randn(1, 128, 8, 8), context)
for hook in hooks:
    hook.remove()
for name, shape_in, shape_out in shapes:
    print(f"{name:42s} {str(shape_in):18s} -> {shape_out}")
attn2 = transformer.transformer_blocks[0].attn2
print(f"\ncross-attention: {attn2.heads} heads of {attn2.head_dim}; q (1, {attn2.heads}, 64, {attn2.head_dim}) from "
      f"the pixels, k and v (1, {attn2.heads}, 77, {attn2.head_dim}) from the text; scores (1, {attn2.heads}, 64, 77)")

# The feed-forward's GEGLU, by hand: half of the projection is the value, the other half its gate.
geglu = transformer.transformer_blocks[0].ff.net[0]
tokens = torch.randn(1, 64, 128)
with torch.no_grad():
    a, gate = geglu.proj(tokens).chunk(2, dim=-1)  # (1, 64, 512) each
    print("GEGLU by hand == module:", torch.allclose(a * F.gelu(gate), geglu(tokens)))

# %% [markdown]
# ## Shapes through the whole U-Net
#
# Forward hooks on every ResNet block, transformer, down- and upsampler record the output shape of each, in the
# order they run. The same function traces the bundled U-Net on a real (1, 4, 16, 16) latent and Stable Diffusion
# 1.5's U-Net built from its published config on the `meta` device, where the forward pass computes shapes only.
# The skip connections are the outputs of conv_in and of every down-path layer; each up-path ResNet
# concatenates one of them, last saved first.

# %%
SD15_UNET_CONFIG = {  # the published unet/config.json of Stable Diffusion 1.5 (the UNetConfig defaults are the same)
    "_class_name": "UNet2DConditionModel", "sample_size": 64, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "attention_head_dim": 8,
    "cross_attention_dim": 768, "norm_num_groups": 32, "flip_sin_to_cos": True, "freq_shift": 0,
}
with torch.device("meta"):
    sd15 = UNet2DConditionModel(UNetConfig.from_dict(SD15_UNET_CONFIG))


def trace_shapes(model, latent_size, context_dim):
    """Run model on (1, 4, s, s) and (1, 77, D) and return [(name, kind, output shape)] in the order they ran."""
    kinds = {"ResnetBlock2D": "resnet", "Transformer2DModel": "transformer", "Downsample2D": "downsample",
             "Upsample2D": "upsample"}
    records, hooks = [], []
    for name, module in model.named_modules():
        kind = kinds.get(type(module).__name__) or (name if name in ("conv_in", "conv_out") else None)
        if kind:
            hooks.append(module.register_forward_hook(
                lambda m, inputs, output, name=name, kind=kind: records.append((name, kind, tuple(output.shape)))))
    device = next(model.parameters()).device
    with torch.no_grad():
        model(torch.randn(1, 4, latent_size, latent_size, device=device), 500,
              torch.randn(1, 77, context_dim, device=device))
    for hook in hooks:
        hook.remove()
    return records


traces = {"bundled": trace_shapes(unet, 16, unet.config.cross_attention_dim), "SD 1.5": trace_shapes(sd15, 64, 768)}
for label, records in traces.items():
    print(f"\n{label}: {len(records)} layers")
    for name, kind, shape in records:
        if kind != "transformer":  # a transformer keeps the shape of the ResNet before it
            print(f"  {name:32s} {str(shape)}")

# %% [markdown]
# Parameters per kind of layer: most of Stable Diffusion's 860 M sit in the ResNet blocks and the transformers of
# the two lowest-resolution levels, where the channels are widest.

# %%
def parameter_table(model):
    groups = {}
    for name, p in model.named_parameters():
        if "attn1" in name:
            group = "self-attention"
        elif "attn2" in name:
            group = "cross-attention"
        elif ".ff." in name:
            group = "feed-forward (GEGLU)"
        elif "attentions" in name:
            group = "transformer norms, proj_in/out"
        elif "resnets" in name:
            group = "ResNet blocks"
        elif "samplers" in name:
            group = "down/upsamplers"
        elif "time_embedding" in name:
            group = "time embedding MLP"
        else:
            group = "conv_in, conv_out, norm"
        groups[group] = groups.get(group, 0) + p.numel()
    return groups


tables = {label: parameter_table(model) for label, model in (("bundled", unet), ("SD 1.5", sd15))}
print(f"{'':32s} {'bundled':>12s} {'SD 1.5':>14s}")
for group in tables["SD 1.5"]:
    print(f"{group:32s} {tables['bundled'].get(group, 0):12,d} {tables['SD 1.5'][group]:14,d}")
print(f"{'total':32s} {sum(tables['bundled'].values()):12,d} {sum(tables['SD 1.5'].values()):14,d}")

# %% [markdown]
# The U in the name, drawn from the traces: each dot is a layer, placed by the order it runs (left to right)
# and its resolution (up = finer), its size growing with the channels; the grey arcs are the skip connections.

# %%
COLOURS = {"conv_in": "k", "conv_out": "k", "resnet": "tab:blue", "transformer": "tab:orange",
           "downsample": "tab:green", "upsample": "tab:red"}


def draw_unet(ax, records, title):
    sizes = [shape[-1] for _, _, shape in records]
    widest = max(shape[1] for _, _, shape in records)
    for i, (name, kind, shape) in enumerate(records):
        ax.scatter(i, sizes[i], s=15 + 120 * shape[1] / widest, color=COLOURS[kind], zorder=3)
    # skips: conv_in, then each down layer's last output (its transformer if it has one) and each downsampler
    skips = []
    for i, (name, kind, _) in enumerate(records):
        last_of_layer = i + 1 == len(records) or records[i + 1][1] != "transformer"
        if name == "conv_in" or (name.startswith("down_blocks") and last_of_layer):
            skips.append(i)
    takers = [i for i, (name, kind, _) in enumerate(records) if name.startswith("up_blocks") and kind == "resnet"]
    for k, (source, taker) in enumerate(zip(reversed(skips), takers)):
        u = torch.linspace(0, 1, 50)
        bump = 1 + (0.12 + 0.012 * (k % 8)) * torch.sin(torch.pi * u)
        ax.plot(source + (taker - source) * u, sizes[source] * bump, color="0.6", lw=0.8, zorder=1)
    ax.set_yscale("log", base=2)
    ax.set(title=title, xlabel="layer, in the order it runs", ylabel="latent size (H = W)")
    ax.set_yticks(sorted(set(sizes)), [str(s) for s in sorted(set(sizes))])
    ax.minorticks_off()


fig, axes = plt.subplots(1, 2, figsize=(14, 3.6), gridspec_kw={"width_ratios": [3, 4]})
draw_unet(axes[0], traces["bundled"], "bundled U-Net (64, 128, 192 channels)")
draw_unet(axes[1], traces["SD 1.5"], "Stable Diffusion 1.5 U-Net (320, 640, 1280, 1280 channels), on meta")
for kind, colour in COLOURS.items():
    if kind != "conv_out":
        axes[1].scatter([], [], color=colour, label=kind.replace("conv_in", "conv_in, conv_out"))
fig.legend(fontsize=8, loc="lower center", ncol=5, bbox_to_anchor=(0.5, -0.06))
fig.tight_layout()
savefig(fig, "06-unet-shapes.png")
plt.show()

# %% [markdown]
# ## Two attention paths, one answer
#
# Every attention layer calls `minidiff.models.attention.attention`, which uses PyTorch's fused kernel
# (`scaled_dot_product_attention`, which never stores the (T_q, T_k) score matrix) unless
# `USE_FUSED_ATTENTION` is switched off; then the formula softmax(q kᵀ / sqrt(d)) v runs step by step. The whole
# U-Net gives the same prediction both ways, up to float32 rounding.

# %%
latent = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
outputs, seconds = {}, {}
with torch.no_grad():
    for fused in (True, False):
        attention_module.USE_FUSED_ATTENTION = fused
        start = time.perf_counter()
        outputs[fused] = unet(latent, 500, text)
        seconds[fused] = time.perf_counter() - start
attention_module.USE_FUSED_ATTENTION = True
error = (outputs[True] - outputs[False]).abs().max() / outputs[False].abs().max()
print(f"fused vs plain attention: max relative difference {error:.1e} "
      f"({1000 * seconds[True]:.0f} ms vs {1000 * seconds[False]:.0f} ms for one call on this CPU)")
assert error < 1e-5

# %% [markdown]
# ## What each word looks at
#
# In cross-attention every image position q_i spreads one unit of attention over the 77 text tokens:
# softmax(q_i kᵀ / sqrt(d)). The column of one token, laid out as an H × W map, shows where in the picture that
# word is being read. `record_cross_attention(unet)` collects these probabilities, (B, heads, H·W, 77), from every
# cross-attention layer at every call while a picture is made.
#
# We make "a red circle above a blue square" with four seeds in one batch, keep the picture the attribute
# detector (`minidiff/data/detect.py`) scores best, and average its maps over the heads, the sampler steps and the
# layers of one resolution. Only the conditional half of the guidance batch is used (the other half reads the
# empty prompt).

# %%
PROMPT, SEEDS, STEPS = "a red circle above a blue square", [0, 1, 2, 3], 15
with record_cross_attention(unet) as records:
    result = sd.text_to_image(PROMPT, num_images_per_prompt=len(SEEDS),
                              generator=[torch.Generator().manual_seed(s) for s in SEEDS],
                              steps=STEPS, sampler="dpmpp_2m", guidance_scale=5.0, progress=False)
requests = parse_prompt(PROMPT)
met = [score(requests, detect_objects(image)) for image in to_uint8(result.images)]
best = max(range(len(SEEDS)), key=lambda k: (met[k]["all"], sum(met[k].values())))
print(f"{len(records)} maps recorded ({STEPS} steps x {len(records) // STEPS} cross-attention layers)")
for k, checks in enumerate(met):
    print(f"seed {SEEDS[k]}: {checks}")
print(f"showing seed {SEEDS[best]}")

pieces = sd.tokenizer.tokenize(PROMPT)  # ['a</w>', 'red</w>', ...]; position 0 of the 77 is the start token
WORDS = ["red", "circle", "blue", "square"]
positions = {word: pieces.index(word + "</w>") + 1 for word in WORDS}
conditional = len(SEEDS) + best  # the batch is [unconditional x 4; conditional x 4]


def word_maps(size):
    """Mean attention (over heads, steps and the layers at size x size) of each image position to each token."""
    maps = [probs[conditional].mean(0) for name, probs in records if probs.shape[2] == size * size]
    return torch.stack(maps).mean(0).T.reshape(77, size, size), len(maps) // STEPS  # (77, size, size), layers


fig, axes = plt.subplots(2, 2 + len(WORDS), figsize=(2.0 * (2 + len(WORDS)), 4.3))
for row, size in enumerate((16, 8)):
    maps, n_layers = word_maps(size)
    axes[row, 0].imshow(result.images[best].permute(1, 2, 0))
    axes[row, 0].set_title(f"seed {SEEDS[best]}", fontsize=8)
    axes[row, 0].set_ylabel(f"{size} x {size} maps\n({n_layers} layers)", fontsize=8)
    for col, word in enumerate(WORDS):
        axes[row, col + 1].imshow(maps[positions[word]], cmap="magma", interpolation="bilinear")
        axes[row, col + 1].set_title(f'"{word}": {maps[positions[word]].mean():.3f}', fontsize=8)
    rest = maps[0] + maps[len(pieces) + 1:].sum(0)  # the start token, the end token and the padding
    axes[row, -1].imshow(rest, cmap="magma", interpolation="bilinear")
    axes[row, -1].set_title(f"start + end/padding: {rest.mean():.2f}", fontsize=8)
    shares = ", ".join(f"{piece.replace('</w>', '')} {maps[i + 1].mean():.3f}" for i, piece in enumerate(pieces))
    print(f"{size} x {size}, share of attention per token: {shares}; start {maps[0].mean():.2f}, "
          f"end and padding {maps[len(pieces) + 1:].sum(0).mean():.2f}")
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
fig.tight_layout(pad=0.4)
savefig(fig, "06-attention-maps.png")
plt.show()

# %% [markdown]
# Each map's title is the share of all attention that word receives (1 would be every position attending only
# to it). Most of the attention goes to the start token and to the end and padding tokens, which after CLIP's
# causal attention carry a summary of the whole prompt; the word tokens get a few percent each, but *where* they
# get it is the point. Look for a colour word lighting up the region where an object of that colour is drawn,
# and a shape word lighting up its object. The picture may miss the prompt (a wrong shape, a missing object):
# then the maps show where the model put each word instead.
#
# Next, write cross-attention yourself: fill in `lessons/exercises/cross_attention.py` and run
#
#     python -m minidiff.check cross_attention
