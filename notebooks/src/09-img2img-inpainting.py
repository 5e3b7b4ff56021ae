# %% [markdown]
# # Lesson 9: image to image, inpainting and outpainting
#
# A text-to-image model can also *edit* a picture, with no new training: start the sampler part-way, from the
# picture's latent noised to that level, instead of from pure noise (image to image); or let it generate only
# inside a mask and put the known part back after every step (inpainting); or pad the canvas and inpaint the
# border (outpainting). This notebook does all three with the bundled shapes model in `weights/`. The text of
# the lesson is `lessons/09-img2img-inpainting.md`.

# %%
import dataclasses

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from minidiff.data.shapes import Scene, SceneObject, render_scenes
from minidiff.models.unet import UNet2DConditionModel
from minidiff.pipelines import StableDiffusion
from minidiff.samplers import make_sampler

torch.manual_seed(0)
sd = StableDiffusion.from_pretrained(ROOT / "weights")
STEPS, SAMPLER, GUIDANCE, SEED = 15, "dpmpp_2m", 5.0, 0
OPTIONS = dict(steps=STEPS, sampler=SAMPLER, guidance_scale=GUIDANCE, seed=SEED, progress=False)


def render(objects, background="white", size=128):
    """A shapes scene drawn from (shape, colour, size, (x, y) centre, radius) tuples: (1, 3, size, size) in [0, 1]."""
    return render_scenes([Scene([SceneObject(*o) for o in objects], background, None, "", {})], size)


def show(ax, image, title=None):
    """Draw an image (3, H, W) in [0, 1], or a mask (1, H, W), without axes."""
    image = image.permute(1, 2, 0).clamp(0, 1).squeeze(-1)  # (H, W, 3), or (H, W) for a mask
    ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


picture = render([("circle", "red", "large", (0.28, 0.5), 0.17), ("square", "blue", "large", (0.72, 0.5), 0.16)])
print("the picture: a red circle to the left of a blue square,", tuple(picture.shape))

# %% [markdown]
# ## Image to image: which steps run
#
# With `strength` s the sampler keeps only the last int(steps · s) of its timesteps. The start is the picture's
# latent z₀ noised to the level of the first step that runs, a sample of q(x_t | x₀):
#
#     x_t = sqrt(ᾱ_t) · z₀ + sqrt(1 − ᾱ_t) · ε
#
# s = 1 starts from (almost) pure noise, like text to image; s = 0.2 starts close to the picture and runs only
# the last fifth of the schedule. `make_sampler(..., strength=s)` makes the cut (`Sampler.__init__` in
# `minidiff/samplers/base.py`): `all_timesteps` is the whole schedule, `timesteps` the part that runs.

# %%
STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)
schedule = make_sampler(SAMPLER, sd.scheduler_config, STEPS).schedule
fig, ax = plt.subplots(figsize=(8, 2.6))
for row, strength in enumerate(STRENGTHS):
    sampler = make_sampler(SAMPLER, sd.scheduler_config, STEPS, strength=strength)
    t0 = int(sampler.timesteps[0])
    print(f"strength {strength}: {len(sampler.timesteps):2d} of {STEPS} steps, from t = {t0:3d} "
          f"(sqrt(ᾱ_t) = {schedule.alphas_cumprod[t0].sqrt():.3f} of the picture is left)")
    skipped = sampler.all_timesteps[: sampler.begin_index]
    ax.scatter(skipped, [row] * len(skipped), marker="o", facecolors="none", edgecolors="0.6", s=22)
    ax.scatter(sampler.timesteps, [row] * len(sampler.timesteps), color="C0", s=22)
ax.set_yticks(range(len(STRENGTHS)), [f"strength {s}" for s in STRENGTHS], fontsize=8)
ax.set(xlabel="timestep t (filled: the steps that run; open: skipped)", xlim=(1010, -10))
fig.tight_layout()
savefig(fig, "09-timesteps.png")
plt.show()

# %% [markdown]
# ## A strength sweep
#
# Two prompts edit the same picture: one changes a colour, the other a shape. `return_trajectory=True` keeps the
# start latent too, so the top row shows what the sampler starts from (decoded). First, the start by hand: the
# pipeline draws the VAE posterior sample z₀ and then ε from one generator, and noises z₀ with the schedule.

# %%
PROMPTS = ["a green circle to the left of a blue square", "a red circle to the left of a blue star"]
results = {s: sd.image_to_image(PROMPTS, picture, strength=s, return_trajectory=True, **OPTIONS) for s in STRENGTHS}

generator = torch.Generator().manual_seed(SEED)
with torch.no_grad():
    z0 = sd.encode_image(picture, generator).expand(len(PROMPTS), -1, -1, -1)  # (2, 4, 16, 16)
noise = sd.noise(z0.shape, generator)
t0 = int(make_sampler(SAMPLER, sd.scheduler_config, STEPS, strength=0.6).timesteps[0])
ab = schedule.alphas_cumprod[t0]
by_hand = ab.sqrt() * z0 + (1 - ab).sqrt() * noise  # q(x_t | x_0) at the first step that runs
print(f"start latent at strength 0.6 (t = {t0}): largest difference from the pipeline's "
      f"{(by_hand - results[0.6].trajectory.start).abs().max():.1e}")

# %%
fig, axes = plt.subplots(3, len(STRENGTHS) + 1, figsize=(1.55 * (len(STRENGTHS) + 1), 1.75 * 3))
show(axes[0, 0], picture[0], "the picture")
axes[1, 0].axis("off"), axes[2, 0].axis("off")
axes[1, 0].text(0.5, 0.5, "green circle\n(a colour)", ha="center", va="center", fontsize=8)
axes[2, 0].text(0.5, 0.5, "blue star\n(a shape)", ha="center", va="center", fontsize=8)
with torch.no_grad():
    starts = sd.decode(torch.cat([results[s].trajectory.start[:1] for s in STRENGTHS]))  # (5, 3, 128, 128)
for col, strength in enumerate(STRENGTHS, start=1):
    show(axes[0, col], starts[col - 1], f"start, strength {strength}")
    for row in (1, 2):
        show(axes[row, col], results[strength].images[row - 1])
fig.tight_layout(pad=0.3)
savefig(fig, "09-strength.png")
plt.show()

# %% [markdown]
# Read each row from left to right: find the lowest strength at which the edit appears, and what else changes
# with it (size, position, the other object). An edit that appears at no strength, or comes out different from
# the prompt, is one the model does not know well enough; more noise cannot fix that. The more noise, the more
# the model may change, and the less of the picture is kept: at strength 1 only the faint trace of sqrt(ᾱ_t)
# printed above survives (lesson 1's zero-terminal-SNR remark), and the layout is mostly the model's own.
#
# ## Inpainting with a plain U-Net: latent blending
#
# Mask m = 1 where the picture is to be repainted. The U-Net generates the whole latent as usual, but after every
# step the known region is overwritten with the picture's latent noised to the level the next step expects:
#
#     x ← (1 − m) · add_noise(z₀, ε, next step) + m · x
#
# The mask is given in pixels and used on the 16 × 16 latent grid (`F.interpolate`, nearest), so its outline
# moves to whole latent cells of 8 × 8 pixels. After the last step the known region is z₀ itself.

# %%
yy, xx = torch.meshgrid(torch.arange(128) + 0.5, torch.arange(128) + 0.5, indexing="ij")
mask = (((xx - 92) ** 2 + (yy - 64) ** 2) < 30**2).float()[None, None]  # (1, 1, 128, 128): a disc over the square
latent_mask = F.interpolate(mask, size=(16, 16))  # (1, 1, 16, 16), as the pipeline makes it
INPAINT_PROMPT = "a red circle to the left of a yellow star"
inpainted = sd.inpaint(INPAINT_PROMPT, picture, mask, num_images_per_prompt=3, return_trajectory=True, **OPTIONS)

generator = torch.Generator().manual_seed(SEED)
with torch.no_grad():
    z0 = sd.encode_image(picture, generator)  # the pipeline's first draw: the picture's latent
    round_trip = sd.decode(z0)
keep = 1 - latent_mask
print(f"final latents outside the mask vs z0: largest difference {((inpainted.latents - z0) * keep).abs().max():.1e}")
outside = (1 - mask).bool().expand(-1, 3, -1, -1)
print(f"pixels outside the mask, mean |error| vs the picture: inpainted {(inpainted.images[:1] - picture)[outside].abs().mean():.4f}, "
      f"VAE round trip {(round_trip - picture)[outside].abs().mean():.4f}")

fig, axes = plt.subplots(1, 6, figsize=(10, 1.95))
show(axes[0], picture[0], "the picture")
show(axes[1], mask[0], "mask (128 x 128)")
show(axes[2], latent_mask[0], "mask on the latent grid")
for i, (ax, image) in enumerate(zip(axes[3:], inpainted.images)):
    show(ax, image, f"inpainted, image {i + 1}")
fig.suptitle(f'prompt: "{INPAINT_PROMPT}"', fontsize=9, y=1.06)
fig.tight_layout(pad=0.3)
savefig(fig, "09-inpainting.png")
plt.show()

# %% [markdown]
# Inside the loop: after each step the latent x (top row, decoded) is a noisy copy of the picture outside the
# mask, where blending put it, and the model's own sample inside. The model's guess of the clean latent x̂₀
# (bottom row) has to agree with the noised known region around the hole, which is what makes the new object fit.
# Look for the step from which x̂₀'s background matches the picture's: before it, the known region was too noisy
# to tell the model what surrounds the hole.

# %%
trajectory, shown = inpainted.trajectory, [0, 2, 5, 8, 11, 14]
with torch.no_grad():
    latents = sd.decode(torch.cat([trajectory.latents[i][:1] for i in shown]))
    predicted = sd.decode(torch.cat([trajectory.predicted_x0[i][:1] for i in shown]))
fig, axes = plt.subplots(2, len(shown), figsize=(1.5 * len(shown), 3.4))
for col, i in enumerate(shown):
    show(axes[0, col], latents[col], f"step {i + 1}: x")
    show(axes[1, col], predicted[col], f"step {i + 1}: x̂₀")
fig.tight_layout(pad=0.3)
savefig(fig, "09-inpainting-steps.png")
plt.show()

# %% [markdown]
# ## Nine-channel inpainting U-Nets
#
# Models trained for inpainting (such as SD 1.5's and SD 2's inpainting checkpoints) take the mask and the
# *masked picture* as input: the U-Net's `conv_in` reads 9 channels,
# [x (4), m (1), VAE latent of the picture with the hole painted mid-grey (4)], and it fills the hole knowing
# what surrounds it, with no blending. `sd.inpaint` picks this path when `unet.config.in_channels == 9`. Here is
# the input it builds, and a 9-channel U-Net made from the bundled 4-channel one by giving `conv_in` five more
# input channels with zero weights (which is how such checkpoints start their fine-tuning).

# %%
masked_picture = torch.where(mask >= 0.5, 0.5, picture)  # (1, 3, 128, 128): the hole becomes mid-grey
with torch.no_grad():
    masked_latents = sd.encode_image(masked_picture, torch.Generator().manual_seed(0))  # (1, 4, 16, 16)
x = torch.randn(1, 4, 16, 16)
unet_input = torch.cat([x, latent_mask, masked_latents], dim=1)
print("9-channel U-Net input:", tuple(unet_input.shape), "= latents 4 + mask 1 + masked-picture latents 4")

config = dataclasses.replace(sd.unet.config, in_channels=9)
unet9 = UNet2DConditionModel(config)
state = sd.unet.state_dict()
state["conv_in.weight"] = torch.cat([state["conv_in.weight"], torch.zeros(config.block_out_channels[0], 5, 3, 3)], 1)
unet9.load_state_dict(state)
context = sd.encode_prompt(INPAINT_PROMPT, None, 1, 1.0, None)[0]  # (1, 77, D), no guidance
with torch.no_grad():
    same = (unet9(unet_input, 500, context) - sd.unet(x, 500, context)).abs().max()
print(f"conv_in weight {tuple(unet9.conv_in.weight.shape)}; with zero weights on the new channels the output "
      f"differs from the 4-channel U-Net's by {same:.1e}: it must be fine-tuned before it uses the mask")

# %% [markdown]
# ## Outpainting: a bigger canvas, a mask on the border
#
# `sd.outpaint(prompt, image, left=..., right=..., top=..., bottom=...)` pads the picture (copying its edge
# pixels outwards, so that the VAE sees no hard edge), masks exactly the new border and inpaints. Here the
# picture is cut to its left half, which holds only the circle, and the model is asked to paint the right half
# back from the full caption. Look for a blue square on the right: if it is missing, or comes out as another red
# circle, the model has not followed the second half of the caption.

# %%
left_half = picture[..., :64]  # (1, 3, 128, 64)
canvas = F.pad(left_half, (0, 64, 0, 0), mode="replicate")  # what outpaint builds: (1, 3, 128, 128)
border = torch.zeros(1, 1, 128, 128)
border[..., 64:] = 1
outpainted = sd.outpaint("a red circle to the left of a blue square", left_half, right=64,
                         num_images_per_prompt=3, **OPTIONS)
fig, axes = plt.subplots(1, 6, figsize=(10, 1.95))
axes[0].imshow(left_half[0].permute(1, 2, 0).numpy(), extent=(0, 64, 128, 0))
axes[0].set(xlim=(0, 128), xticks=[], yticks=[], title="the left half", facecolor="0.7")
axes[0].title.set_fontsize(8)
show(axes[1], canvas[0], "padded canvas")
show(axes[2], border[0], "mask: the new border")
for i, (ax, image) in enumerate(zip(axes[3:], outpainted.images)):
    show(ax, image, f"outpainted, image {i + 1}")
fig.suptitle('prompt: "a red circle to the left of a blue square"', fontsize=9, y=1.06)
fig.tight_layout(pad=0.3)
savefig(fig, "09-outpainting.png")
plt.show()

# %% [markdown]
# Outpainting beyond the model's 128 × 128 training size works the same way (the U-Net is convolutional), but
# the model has never seen such pictures: expect repeated objects and seams where the border meets the kept
# part. Painting a wide picture in overlapping tiles of the training size avoids both.
