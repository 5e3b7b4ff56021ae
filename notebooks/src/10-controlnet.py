# %% [markdown]
# # Lesson 10: ControlNet
#
# A ControlNet steers a frozen text-to-image U-Net with a picture: here the Canny edges of a shapes scene. It is
# a trainable copy of the U-Net's encoder that reads the condition and adds one residual to each skip connection
# of the U-Net, each through a *zero convolution*. This notebook checks that a fresh ControlNet changes nothing,
# shows why it can still learn, computes Canny edges, and generates with the bundled ControlNet
# (`weights/controlnet`): several prompts for one edge map, the conditioning scale, the guidance window, and the
# edge F1 score. The text of the lesson is `lessons/10-controlnet.md`.

# %%
import matplotlib.pyplot as plt
import torch

from minidiff.canny import canny, non_maximum_suppression, sobel
from minidiff.data.shapes import Scene, SceneObject, render_scenes
from minidiff.tools.evaluate import edge_f1
from minidiff.models.controlnet import ControlNetModel, zero_conv
from minidiff.pipelines import StableDiffusion

torch.manual_seed(0)
sd = StableDiffusion.from_pretrained(ROOT / "weights")  # with weights/controlnet: sd.controlnet
STEPS, SAMPLER, GUIDANCE, SEED = 10, "dpmpp_2m", 5.0, 0
OPTIONS = dict(steps=STEPS, sampler=SAMPLER, guidance_scale=GUIDANCE, progress=False)
for name in ("unet", "controlnet"):
    print(f"{name:10s} {sum(p.numel() for p in getattr(sd, name).parameters()) / 1e6:5.2f} M parameters")


def generators(first, n):
    """One generator per picture, seeded SEED + first, SEED + first + 1, ...: a picture's start noise then does
    not depend on the batch it is drawn in (one generator would draw the whole batch's noise in a row)."""
    return [torch.Generator().manual_seed(SEED + first + i) for i in range(n)]


def show(ax, image, title=None):
    """Draw an image (3, H, W) in [0, 1], or a one-channel map (1, H, W), without axes."""
    image = image.permute(1, 2, 0).float().squeeze(-1)  # (H, W, 3), or (H, W)
    ax.imshow(image.numpy(), cmap="gray", interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)

# %% [markdown]
# ## Zero convolutions: a fresh ControlNet changes nothing
#
# `ControlNetModel.from_unet(unet)` copies the U-Net's `conv_in`, time embedding, down blocks and mid block. The
# condition picture goes through a small convnet (`controlnet_cond_embedding`, 128 × 128 → 16 × 16) and is added
# after `conv_in`. Every skip connection of the copy, and its mid block, then passes through a 1 × 1 convolution
# whose weight and bias start at zero, and the result is added to the matching skip of the U-Net:
#
#     h = conv_in(x) + E(condition)                 the copy's first features
#     r_i = Z_i(skip_i of the copy) · scale         U-Net skip_i ← skip_i + r_i
#
# So at initialisation every r_i is exactly zero, and the U-Net's output is unchanged, bit for bit.

# %%
fresh = ControlNetModel.from_unet(sd.unet)
g = torch.Generator().manual_seed(1)
x = torch.randn(1, 4, 16, 16, generator=g)  # a noisy latent
condition = torch.rand(1, 3, 128, 128, generator=g)  # any picture
context = sd.encode_prompt("an orange star above a blue square", None, 1, 1.0, None)[0]  # (1, 77, D)
with torch.no_grad():
    down, mid = fresh(x, 500, context, condition)
    plain = sd.unet(x, 500, context)
    controlled = sd.unet(x, 500, context, down_block_additional_residuals=down, mid_block_additional_residual=mid)
print(f"{len(down)} skip residuals, shapes {[tuple(r.shape[1:]) for r in down[:4]]} ... and mid {tuple(mid.shape[1:])}")
print(f"largest |residual| {max(r.abs().max() for r in (*down, mid)):.1e}; "
      f"U-Net output with vs without the fresh ControlNet: largest difference {(controlled - plain).abs().max():.1e}")

# %% [markdown]
# ## ... and why it still learns
#
# A zero convolution is out = W · h + b. Its gradients are ∂L/∂W = ∂L/∂out · hᵀ and ∂L/∂b = ∂L/∂out: not zero,
# because its *input* h is not zero. What is zero at first is the gradient it passes back, ∂L/∂h = Wᵀ · ∂L/∂out.
# So at the very first step only the zero convolutions learn; once they have moved, the gradient reaches the
# encoder copy behind them and the condition embedding. One zero convolution first, then the whole ControlNet
# with the training loss ‖ε − ε_θ(x_t, t, c; r)‖² (`minidiff/train/controlnet.py`).

# %%
conv = zero_conv(8, 8)
h = torch.randn(2, 8, 4, 4, generator=g, requires_grad=True)
(conv(h) * torch.randn(2, 8, 4, 4, generator=g)).sum().backward()
print(f"one zero conv: |dL/dW| = {conv.weight.grad.norm():.3f}, |dL/db| = {conv.bias.grad.norm():.3f}, "
      f"|dL/dh| = {h.grad.norm():.3f}")

GROUPS = {
    "zero convs": ("controlnet_down_blocks", "controlnet_mid_block"),
    "condition embedding": ("controlnet_cond_embedding",),
    "encoder copy": ("conv_in", "time_embedding", "down_blocks", "mid_block"),
}
sd.unet.requires_grad_(False)  # the U-Net stays frozen; only the ControlNet trains


def gradient_norms(controlnet):
    """Backpropagate one training loss; returns {group: norm of the gradient of the group's parameters}."""
    controlnet.zero_grad()
    eps = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))  # the target: the noise to predict
    down, mid = controlnet(x, 500, context, condition)
    eps_pred = sd.unet(x, 500, context, down_block_additional_residuals=down, mid_block_additional_residual=mid)
    ((eps_pred - eps) ** 2).mean().backward()
    norms = {}
    for group, prefixes in GROUPS.items():
        grads = [p.grad.norm() for n, p in controlnet.named_parameters() if n.split(".")[0] in prefixes]
        norms[group] = torch.stack(grads).norm()
    return norms


before = gradient_norms(fresh)
with torch.no_grad():  # one plain gradient step on the zero convs, which are the only ones with a gradient
    for name, p in fresh.named_parameters():
        if name.split(".")[0] in GROUPS["zero convs"]:
            p -= 1.0 * p.grad
after = gradient_norms(fresh)
for group in GROUPS:
    print(f"{group:20s} gradient norm at step 0: {before[group]:.2e}   after one step: {after[group]:.2e}")

# %% [markdown]
# ## Canny edges
#
# The bundled ControlNet was trained on Canny edges of the shapes scenes (`minidiff/canny.py`, the same rules
# as OpenCV's `cv2.Canny(image, 100, 200)`): Sobel gradients, thinning to one pixel along the gradient
# (non-maximum suppression), then two thresholds with hysteresis. The condition is the edge map as a picture,
# white edges on black.

# %%
scene = Scene([SceneObject("star", "orange", "large", (0.34, 0.27), 0.16),
               SceneObject("square", "blue", "large", (0.64, 0.72), 0.15)], "white", "above", "", {})
picture = render_scenes([scene])  # (1, 3, 128, 128) in [0, 1]
CAPTION = "an orange star above a blue square"
edges = canny(picture) > 0  # (1, 1, 128, 128) bool
control_image = edges.float()  # white edges on black; the pipeline repeats it to 3 channels

gx, gy = sobel(picture * 255)  # (1, 3, H, W) each
magnitude, channel = (gx.abs() + gy.abs()).max(1, keepdim=True)  # the strongest channel at each pixel
thin = non_maximum_suppression(magnitude, gx.gather(1, channel), gy.gather(1, channel))
print(f"edge pixels: {int(edges.sum())} of {edges.numel()}")

fig, axes = plt.subplots(1, 4, figsize=(8, 2.3))
show(axes[0], picture[0], "the scene")
show(axes[1], magnitude[0] / magnitude.max(), "|gx| + |gy| (Sobel)")
show(axes[2], (thin & (magnitude > 100))[0].float(), "thinned, above the low threshold")
show(axes[3], control_image[0], "Canny edges: the condition")
fig.tight_layout(pad=0.3)
savefig(fig, "10-canny.png")
plt.show()

# %% [markdown]
# ## One edge map, several prompts, several scales
#
# `sd.control(prompt, control_image, controlnet_scale=1.0, guidance_start=0.0, guidance_end=1.0, ...)` is text
# to image with the ControlNet's residuals added at every step (`minidiff/pipelines/controlnet.py`).
# `controlnet_scale` multiplies every residual: 0 is plain text to image, 1 is what the ControlNet was trained
# with, above 1 pushes harder. Three prompts run together at each scale: the scene's caption, the same shapes in
# other colours, and shapes the edges do not have. At scale 1 the edges should fix where the outlines go while
# the prompt says what fills them.

# %%
PROMPTS = [CAPTION, "a green star above a purple square", "a yellow heart above a red circle"]
SCALES = (0.0, 0.5, 1.0, 1.5)
by_scale = {s: sd.control(PROMPTS, control_image, controlnet_scale=s, generator=generators(0, 3), **OPTIONS).images
            for s in SCALES}

fig, axes = plt.subplots(1, len(PROMPTS) + 1, figsize=(2.1 * (len(PROMPTS) + 1), 2.4))
show(axes[0], control_image[0], "condition")
for ax, image, prompt in zip(axes[1:], by_scale[1.0], PROMPTS):
    show(ax, image, prompt.replace(" above", "\nabove"))
fig.tight_layout(pad=0.3)
savefig(fig, "10-prompts.png")
plt.show()

# %% [markdown]
# ## Edge F1 against the conditioning scale
#
# The edge F1 (`edge_f1` in `minidiff/tools/evaluate.py`) compares the Canny edges of each output with the condition:
# precision is the fraction of the output's edge pixels that have a condition edge within one pixel, recall the
# fraction of condition edges matched by the output, F1 = 2PR / (P + R).

# %%
def f1_to_condition(images):
    """Edge F1 of each picture (B, 3, H, W) in [0, 1] against the condition's edges. Returns (B,)."""
    return edge_f1(canny(images)[:, 0] > 0, edges[:, 0].expand(len(images), -1, -1))


f1 = {s: f1_to_condition(by_scale[s]) for s in SCALES}
for s in SCALES:
    print(f"scale {s}: edge F1 " + ", ".join(f"{score:.2f}" for score in f1[s]))

fig, axes = plt.subplots(len(PROMPTS), len(SCALES), figsize=(1.6 * len(SCALES), 1.8 * len(PROMPTS)))
for col, s in enumerate(SCALES):
    for row in range(len(PROMPTS)):
        show(axes[row, col], by_scale[s][row], f"scale {s}: F1 {f1[s][row]:.2f}")
for row, label in enumerate(("caption", "recoloured", "heart, circle")):
    axes[row, 0].set_ylabel(label, fontsize=8)
fig.tight_layout(pad=0.3)
savefig(fig, "10-scale.png")
plt.show()

fig, ax = plt.subplots(figsize=(4.2, 2.8))
for row, prompt in enumerate(PROMPTS):
    ax.plot(SCALES, [f1[s][row] for s in SCALES], "o-", label=prompt)
ax.set(xlabel="controlnet_scale", ylabel="edge F1 to the condition", ylim=(0, 1), xticks=SCALES)
ax.legend(fontsize=7)
fig.tight_layout()
savefig(fig, "10-edge-f1.png")
plt.show()

# %% [markdown]
# Scale 0 gives the plain model's picture: whatever F1 it scores is the baseline that chance agreement between
# two drawings of the same caption reaches. Look for the F1 rising well above it as the scale grows, for the
# contradicting prompt too. A single curve that stays near its baseline means that for this prompt and seed the
# picture went its own way; if every curve stayed flat, the ControlNet's residuals would be too small to matter.
# One seed per prompt is a small sample: `python -m minidiff evaluate` averages the edge F1 over many scenes.
#
# ## The guidance window
#
# `guidance_start` and `guidance_end` (fractions of the steps) switch the ControlNet on for part of the run
# only. The layout of a picture is settled in the first, noisiest steps (lesson 8's trajectory), its details in
# the last ones. Here the contradicting prompt runs with the ControlNet on for the first 40 % of the steps, then
# for the last 60 %, with the same start noise as its picture in the scale sweep. If the early window scores
# about the plain model's F1, the first steps were not enough to fix the layout to the edges.

# %%
WINDOWS = ((0.0, 1.0), (0.0, 0.4), (0.4, 1.0))
contradicting = PROMPTS[2]
by_window = {(0.0, 1.0): by_scale[1.0][2:]}
for window in WINDOWS[1:]:
    by_window[window] = sd.control(contradicting, control_image, guidance_start=window[0], guidance_end=window[1],
                                   generator=generators(2, 1), **OPTIONS).images
fig, axes = plt.subplots(1, len(WINDOWS) + 1, figsize=(2.0 * (len(WINDOWS) + 1), 2.3))
show(axes[0], control_image[0], "condition")
for ax, (a, b) in zip(axes[1:], WINDOWS):
    score = f1_to_condition(by_window[(a, b)])[0]
    print(f"ControlNet on from {a:.0%} to {b:.0%} of the steps: edge F1 {score:.2f}")
    show(ax, by_window[(a, b)][0], f"on for {a:.0%}-{b:.0%}: F1 {score:.2f}")
fig.suptitle(f'prompt: "{contradicting}"', fontsize=9, y=1.04)
fig.tight_layout(pad=0.3)
savefig(fig, "10-window.png")
plt.show()

# %% [markdown]
# Next, write the zero convolution yourself: fill in `lessons/exercises/zero_convolution.py` and run
#
#     python -m minidiff.check zero_convolution
