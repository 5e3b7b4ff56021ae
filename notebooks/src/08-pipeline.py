# %% [markdown]
# # Lesson 8: the whole pipeline, end to end
#
# Text to image is five stages: the tokenizer turns the prompt into token ids, the text encoder turns them into
# the vectors the U-Net attends to, a seed gives a block of random latents, a sampler walks that noise down to a
# clean latent with the guided U-Net, and the VAE decoder turns the latent into pixels. This notebook runs each stage by hand with the bundled
# shapes model (`weights/`), checks that the result is exactly `StableDiffusion.text_to_image`'s, and then
# looks inside: the trajectory, seeds and reproducibility, samplers, and where the time goes. The text of the
# lesson is `lessons/08-pipeline.md`.

# %%
import time

import matplotlib.pyplot as plt
import torch

from minidiff.pipelines import StableDiffusion
from minidiff.samplers import SAMPLER_NAMES, make_sampler, randn

torch.manual_seed(0)
sd = StableDiffusion.from_pretrained(ROOT / "weights")  # tokenizer, text encoder, VAE, U-Net, scheduler config
for name in ("text_encoder", "unet", "vae"):
    module = getattr(sd, name)
    print(f"{name:12s} {type(module).__name__:22s} {sum(p.numel() for p in module.parameters()) / 1e6:5.1f} M parameters")

PROMPT, SEED, STEPS, GUIDANCE = "a red circle above a blue square", 0, 20, 5.0
times = {}  # seconds per stage, for the timing figure at the end


def show(ax, image, title=None):
    """Draw an image (3, H, W) in [0, 1] without axes."""
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)

# %% [markdown]
# ## Stage 1: tokens
#
# The tokenizer splits the prompt into pieces of its vocabulary (byte-pair encoding; `</w>` marks the end of a
# word), adds a start and an end token and pads the row to CLIP's 77 positions. Guidance needs a second
# text too: the empty prompt, which is just the start token and padding.

# %%
start = time.perf_counter()
tokens = sd.tokenizer([PROMPT, ""])  # two rows: the prompt and the unconditional (empty) text
times["tokenize"] = time.perf_counter() - start
print(sd.tokenizer.tokenize(PROMPT))
print("prompt ids:", tokens.input_ids[0, :12].tolist(), "...")
print("empty ids: ", tokens.input_ids[1, :12].tolist(), "...")
print(f"start token {sd.tokenizer.bos_id}, end token {sd.tokenizer.eos_id}, padding {sd.tokenizer.pad_id};",
      "shape", tuple(tokens.input_ids.shape))

# %% [markdown]
# ## Stage 2: the text encoder
#
# CLIP's text transformer turns each row of ids into 77 vectors (here of width 256; 768 in Stable Diffusion 1).
# The U-Net's cross-attention reads all 77 of them at every step. For guidance the two texts are stacked as
# one batch, **unconditional first**: `context = [c_empty; c_prompt]`, shape (2, 77, D). Each text is encoded
# on its own, as the pipeline does (a batch of two can round the last bits differently).

# %%
with torch.no_grad():
    start = time.perf_counter()
    c_prompt = sd.text_encoder(tokens.input_ids[:1]).last_hidden_state  # (1, 77, D)
    c_empty = sd.text_encoder(tokens.input_ids[1:]).last_hidden_state  # (1, 77, D)
    times["text encoder"] = time.perf_counter() - start
context = torch.cat([c_empty, c_prompt])  # (2, 77, D): [unconditional; conditional]
print("context", tuple(context.shape), f"| difference between the two texts: {(c_prompt - c_empty).norm():.1f}")

# %% [markdown]
# ## Stage 3: the start noise, from the seed
#
# A seed makes one `torch.Generator` on the CPU; `randn` (minidiff/samplers/base.py) draws the start latent
# from it, of shape (B, 4, H/8, W/8) = (1, 4, 16, 16) for the bundled model's 128 x 128 pictures. The sampler
# says how large pure noise is: `init_noise_sigma` is 1 for samplers that keep the latent in the ᾱ-form
# (DDIM, DPM++ 2M) and about σ_max for the σ-space samplers (Euler, Heun, ...).
#
# The generator is a stream of numbers. One generator for a batch draws the batch's noise in a row, so the
# first picture of a batch of four equals the picture of that seed alone, and the other three are *not* the
# next seeds. A list of generators, one per picture, gives every picture its own seed whatever the batch. The
# command line does neither: `--seed 7 --num 4` makes four runs of one picture each, with seeds 7, 8, 9 and 10.

# %%
sampler = make_sampler("euler", sd.scheduler_config, STEPS)
start = time.perf_counter()
generator = torch.Generator("cpu").manual_seed(SEED)
x_T = randn((1, 4, 16, 16), generator) * sampler.init_noise_sigma  # (1, 4, 16, 16)
times["start noise"] = time.perf_counter() - start
print(f"euler: init_noise_sigma = {sampler.init_noise_sigma:.3f}, timesteps {sampler.timesteps[:4].tolist()} ...")

shape = (4, 4, 16, 16)
one_stream = randn(shape, torch.Generator().manual_seed(7))  # text_to_image(..., seed=7, num_images_per_prompt=4)
own_seeds = randn(shape, [torch.Generator().manual_seed(s) for s in (7, 8, 9, 10)])  # one generator per picture
alone = [randn((1, *shape[1:]), torch.Generator().manual_seed(s)) for s in (7, 8, 9, 10)]  # --seed 7 --num 4
print("one generator:  picture 0 == seed 7 alone:", torch.equal(one_stream[:1], alone[0]),
      "| picture 1 == seed 8 alone:", torch.equal(one_stream[1:2], alone[1]))
print("generator list: every picture == its seed alone:", all(torch.equal(own_seeds[i : i + 1], alone[i]) for i in range(4)))

# %% [markdown]
# ## Stage 4: the sampler loop with guidance, by hand
#
# Here is the whole loop with the Euler sampler, in σ-space (lesson 3): the latent is x = x_0 + σ ε, the
# U-Net sees x / sqrt(σ² + 1), and classifier-free guidance runs the unconditional and the conditional
# prediction as one batch of two:
#
#     ε̂ = ε_empty + s (ε_prompt - ε_empty),     x̂_0 = x - σ ε̂,     x ← x + (σ' - σ) (x - x̂_0) / σ
#
# s = 1 would be the prompt's prediction alone; s > 1 extrapolates away from the empty text, which makes the
# picture follow the prompt more closely. Lesson 7 (`lessons/07-guidance.md`) is about this one line.

# %%
@torch.no_grad()
def euler_with_guidance(x, context, guidance, sampler):
    """Sample from x (B, 4, h, w) with context (2B, 77, D) = [unconditional; conditional]. Returns x_0 (B, 4, h, w)."""
    for i, t in enumerate(sampler.timesteps):
        sigma, sigma_next = sampler.sigmas[i], sampler.sigmas[i + 1]
        x_in = torch.cat([x, x]) / (sigma**2 + 1) ** 0.5  # (2B, 4, h, w): both halves of the guidance batch
        eps_empty, eps_prompt = sd.unet(x_in, t, context).chunk(2)  # (B, 4, h, w) each
        eps = eps_empty + guidance * (eps_prompt - eps_empty)  # classifier-free guidance
        x0_hat = x - sigma * eps  # the clean latent the network predicts
        slope = (x - x0_hat) / sigma  # dx/dσ of the probability-flow ODE
        x = x + slope * (sigma_next - sigma)  # one Euler step from σ to σ
    return x


start = time.perf_counter()
x_0 = euler_with_guidance(x_T, context, GUIDANCE, sampler)
times["sampler loop"] = time.perf_counter() - start
print(f"{STEPS} steps, {1000 * times['sampler loop'] / STEPS:.0f} ms per step (one U-Net call on a batch of 2)")

# %% [markdown]
# ## Stage 5: the VAE decoder
#
# The latent the U-Net works with is the VAE's latent times `scaling_factor` (chosen so that latents have
# roughly unit variance); divide it out, decode, and map [-1, 1] to [0, 1].

# %%
with torch.no_grad():
    start = time.perf_counter()
    decoded = sd.vae.decode(x_0 / sd.vae.config.scaling_factor)  # (1, 3, 128, 128) in about [-1, 1]
    times["VAE decode"] = time.perf_counter() - start
image = (decoded / 2 + 0.5).clamp(0, 1)
print("scaling_factor", sd.vae.config.scaling_factor, "| image", tuple(image.shape))

# %% [markdown]
# ## The same picture from the pipeline
#
# `text_to_image` does exactly these stages (minidiff/pipelines/text_to_image.py); with the same seed,
# sampler, steps and guidance its latents and pixels are bit for bit those of the loop above. With
# `return_trajectory=True` it also keeps each step's latent and predicted x̂_0.

# %%
result = sd.text_to_image(PROMPT, steps=STEPS, sampler="euler", guidance_scale=GUIDANCE, seed=SEED,
                          return_trajectory=True, progress=False)
print("latents identical:", torch.equal(result.latents, x_0), "| pixels identical:", torch.equal(result.images, image))
assert torch.equal(result.latents, x_0) and torch.equal(result.images, image)

fig, axes = plt.subplots(1, 9, figsize=(12, 1.7))
for c in range(4):
    axes[c].imshow(x_T[0, c], cmap="RdBu_r")
    axes[4 + c].imshow(x_0[0, c], cmap="RdBu_r")
    axes[c].set_title(f"start noise, ch {c}", fontsize=7)
    axes[4 + c].set_title(f"final latent, ch {c}", fontsize=7)
show(axes[8], image[0], "decoded")
for ax in axes:
    ax.set_xticks([]), ax.set_yticks([])
fig.tight_layout(pad=0.3)
savefig(fig, "08-latents.png")
plt.show()

# %% [markdown]
# ## The trajectory
#
# After each step the sampler holds a latent at a lower noise level, and the network's answer at that step is
# a guess of the final latent, x̂_0. Decoding both shows the picture forming: the guesses settle the layout and
# colours within the first few steps, while the latent itself is still mostly noise; the later steps refine
# edges. The latents are shown as the network sees them, x / sqrt(σ² + 1).

# %%
trajectory = result.trajectory
shown = [0, 2, 4, 7, 11, 19]
sigmas = sampler.sigmas
latents = [trajectory.latents[i] / (sigmas[i + 1] ** 2 + 1) ** 0.5 for i in shown]  # after step i: noise level σ_{i+1}
with torch.no_grad():
    pictures = sd.decode(torch.cat(latents + [trajectory.predicted_x0[i] for i in shown]))  # (12, 3, 128, 128)

fig, axes = plt.subplots(2, len(shown), figsize=(1.6 * len(shown), 3.6))
for k, i in enumerate(shown):
    show(axes[0, k], pictures[k], f"step {i + 1}: t = {trajectory.timesteps[i]:.0f}")
    show(axes[1, k], pictures[len(shown) + k])
axes[0, 0].set_ylabel("latent x", fontsize=8)
axes[1, 0].set_ylabel("predicted x̂_0", fontsize=8)
fig.tight_layout(pad=0.3)
savefig(fig, "08-trajectory.png")
plt.show()


# %% [markdown]
# ## Seeds
#
# Each seed is a different start noise and so a different picture of the same prompt. With one generator per
# picture a whole grid is one batch: three prompts times three seeds, nine pictures, 18 U-Net rows per step.
# The sampler here is DPM++ 2M with 12 steps, to keep the notebook quick (it needs fewer steps than the
# bundled model's default, Euler ancestral, which `python -m minidiff generate` runs for 20).

# %%
PROMPTS = ["a red circle above a blue square", "a large green triangle on a yellow background",
           "a purple star in the top left"]
SEEDS = [0, 1, 2]
generators = [torch.Generator().manual_seed(s) for _ in PROMPTS for s in SEEDS]  # prompt-major, like the batch
grid = sd.text_to_image(PROMPTS, num_images_per_prompt=len(SEEDS), generator=generators, steps=12,
                        sampler="dpmpp_2m", guidance_scale=GUIDANCE, progress=False).images  # (9, 3, 128, 128)

fig, axes = plt.subplots(len(PROMPTS), len(SEEDS), figsize=(1.7 * len(SEEDS), 1.8 * len(PROMPTS)))
for row, prompt in enumerate(PROMPTS):
    for col, seed in enumerate(SEEDS):
        show(axes[row, col], grid[row * len(SEEDS) + col], f"seed {seed}" if row == 0 else None)
    axes[row, 0].set_ylabel(prompt.replace(" on a", "\non a").replace(" above", "\nabove").replace(" in the", "\nin the"),
                            fontsize=7)
fig.tight_layout(pad=0.3)
savefig(fig, "08-seeds.png")
plt.show()

# %% [markdown]
# Reproducibility: the top-left picture, made again on its own with `seed=0`, is the same picture. Only the last
# bits may differ, because the U-Net's arithmetic on a batch of 18 rows can round differently from a batch of 2.
# The same seed, settings and batch size on the same machine give identical bits run after run: that is how the
# pipeline above reproduced the hand-written loop exactly.

# %%
single = sd.text_to_image(PROMPTS[0], steps=12, sampler="dpmpp_2m", guidance_scale=GUIDANCE, seed=0, progress=False)
print(f"seed 0 in the batch of nine vs alone: largest pixel difference {(grid[0] - single.images[0]).abs().max():.1e}")

# %% [markdown]
# ## Samplers, same seed
#
# The sampler is a plug-in: every sampler starts from the same noise (scaled by its own `init_noise_sigma`) and
# follows its own rule (lesson 3), here with 10 steps each. The deterministic ones solve the same ODE and
# should end near one another, though with so few steps one of them can go wrong (look at LMS); DDPM and Euler
# ancestral add fresh noise at every step, so their pictures can differ in details or, for a less certain
# prompt, altogether. Heun calls the U-Net twice per step (the titles count the calls, which is what the time of
# a run is proportional to).

# %%
fig, axes = plt.subplots(1, len(SAMPLER_NAMES), figsize=(1.6 * len(SAMPLER_NAMES), 2.0))
for ax, name in zip(axes, SAMPLER_NAMES):
    picture = sd.text_to_image(PROMPT, steps=10, sampler=name, guidance_scale=GUIDANCE, seed=SEED, progress=False)
    calls = len(make_sampler(name, sd.scheduler_config, 10).timesteps)  # U-Net calls of a 10-step run
    show(ax, picture.images[0], f"{name}\n{calls} U-Net calls")
fig.tight_layout(pad=0.3)
savefig(fig, "08-samplers.png")
plt.show()

# %% [markdown]
# ## Where the time goes
#
# The times of the hand-written run above, stage by stage (on a log scale). The U-Net runs once per step on the
# guidance batch of two, `STEPS` times; everything else runs once.

# %%
fig, ax = plt.subplots(figsize=(6, 2.2))
names = list(times)
ax.barh(names, [times[k] for k in names], color="tab:blue")
for i, k in enumerate(names):
    ax.text(times[k], i, f" {1000 * times[k]:.1f} ms", va="center", fontsize=8)
ax.set(xlabel="seconds on this machine", xscale="log", title=f"text to image, {STEPS} Euler steps, one 128 x 128 picture")
ax.set_xlim(right=8 * max(times.values()))  # room for the last label
ax.invert_yaxis()
fig.tight_layout()
savefig(fig, "08-timing.png")
plt.show()
total = sum(times.values())
for k in names:
    print(f"{k:14s} {1000 * times[k]:9.1f} ms  {100 * times[k] / total:5.1f} %")

# %% [markdown]
# ## The same from the command line
#
# `python -m minidiff generate` runs `text_to_image` and writes a PNG. With the bundled model its defaults are
# Euler ancestral, 20 steps and guidance 5; the options below reproduce the hand-written Euler run of this notebook:
#
#     python -m minidiff generate "a red circle above a blue square" --seed 0 --sampler euler --steps 20 --cfg 5
#
# and `--sampler dpmpp_2m --steps 12` draws the seed-0 picture of the grid. Without `--seed` the
# command picks a random seed and prints it, so any picture you like can be made again.
#
# Guidance is lesson 7's subject (`lessons/07-guidance.md`), with the exercise `classifier_free_guidance`;
# lesson 9 starts the same loop from a noised picture instead of pure noise.
