# %% [markdown]
# # Lesson 7: classifier-free guidance
#
# One U-Net, trained with the caption most of the time and with the empty text the rest, predicts the noise two
# ways; classifier-free guidance extrapolates from the unconditional prediction through the conditional one:
#
#     ε̂ = ε(x, t, "") + s · (ε(x, t, c) − ε(x, t, ""))
#
# This notebook looks at that line from every side, with the bundled shapes model (`weights/`): the exact picture
# on a one-dimensional toy, what each branch predicts at one step, the batch of two, a sweep of the guidance scale
# s with the prompts scored by the attribute detector, oversaturation at large s, and negative prompts. The text
# of the lesson is `lessons/07-guidance.md`.

# %%
import matplotlib.pyplot as plt
import torch

from minidiff.data.captions import parse_prompt
from minidiff.data.detect import PALETTE, detect_objects, score
from minidiff.tools.evaluate import to_uint8
from minidiff.pipelines import StableDiffusion
from minidiff.samplers import make_sampler, randn
from minidiff.schedule import NoiseSchedule
from minidiff.train.bundled import RECIPE

sd = StableDiffusion.from_pretrained(ROOT / "weights")
print(f"caption_dropout of the bundled model's U-Net stage: {RECIPE['unet'].caption_dropout} "
      f"(the share of training examples that see the empty text instead of their caption)")


def show(ax, image, title=None):
    """Draw an image (3, H, W) in [0, 1] without axes."""
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)

# %% [markdown]
# ## The implicit classifier, on a toy where everything is exact
#
# Bayes' rule, p(c | x) ∝ p(x | c) / p(x), in score form (gradients of log densities in x) reads
#
#     ∇ log p(c | x) = ∇ log p(x | c) − ∇ log p(x)     ≈ −(ε(x, t, c) − ε(x, t, "")) / σ_t
#
# so ε_cond − ε_uncond is, up to −σ_t, the gradient of a classifier the network never had to be trained as.
# Guidance follows that gradient s times harder than Bayes would: it samples (at each noise level) from
#
#     p_s(x | c) ∝ p(x) · p(c | x)^s = p(x | c)^s · p(x)^(1 − s)
#
# s = 0 is the unconditional model, s = 1 the conditional one, s > 1 an exaggeration. Two classes on a line make
# it concrete: "red" data is N(−1, 1), "blue" data N(+1, 1), equally common. p(red | x) is a logistic curve, and
# raising it to the power s pushes the mass of p_s away from the blue side: the samples become *more* red than
# red data ever is, and less varied.

# %%
line = torch.linspace(-7, 5, 1201, dtype=torch.float64)
dx = line[1] - line[0]
normal = lambda mean: torch.exp(-0.5 * (line - mean) ** 2) / (2 * torch.pi) ** 0.5
p_red, p_blue = normal(-1.0), normal(1.0)
p_x = 0.5 * p_red + 0.5 * p_blue  # the unconditional data density
classifier = 0.5 * p_red / p_x  # p(red | x), the implicit classifier

fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
for s in (0, 1, 2, 4, 8):
    p_s = p_x * classifier**s
    p_s = p_s / (p_s.sum() * dx)  # normalise on the grid
    mean = (line * p_s).sum() * dx
    std = (((line - mean) ** 2 * p_s).sum() * dx).sqrt()
    print(f"s = {s}: mean {mean:+.2f}, std {std:.2f}")
    axes[0].plot(line, p_s, label=f"s = {s}" + {0: " (unconditional)", 1: " (conditional)"}.get(s, ""))
    axes[1].plot(line, classifier**s, label=f"p(red | x)^{s}")
axes[0].set(title="p_s(x | red) ∝ p(x) p(red | x)^s", xlabel="x")
axes[1].set(title="the implicit classifier, raised to the power s", xlabel="x")
axes[0].legend(fontsize=8)
axes[1].legend(fontsize=8)
fig.tight_layout()
savefig(fig, "07-toy.png")
plt.show()

# %% [markdown]
# ## One step, both branches
#
# At the first step of a run (pure noise, t near 1000) the U-Net's noise prediction implies a guess of the clean
# latent, x̂_0 = (x_t − sqrt(1 − ᾱ_t) ε̂) / sqrt(ᾱ_t). Decoded, the unconditional guess is a vague average picture,
# the conditional one differs from it a little, and guidance exaggerates the difference between the two. The
# last panel shows where the prompt changes the prediction most: |ε_cond − ε_uncond|, averaged over the four
# latent channels.

# %%
PROMPT = "a red circle above a blue square"
context, _ = sd.encode_prompt(PROMPT, None, 1, guidance_scale=5.0, clip_skip=None)  # (2, 77, D) [uncond; cond]
sampler = make_sampler("dpmpp_2m", sd.scheduler_config, 10)
t = sampler.timesteps[0]
alpha_bar = NoiseSchedule.from_config(sd.scheduler_config).alphas_cumprod[int(t)]
x_T = randn((1, 4, 16, 16), torch.Generator().manual_seed(0)) * sampler.init_noise_sigma  # (1, 4, 16, 16)
with torch.no_grad():
    eps_uncond, eps_cond = sd.unet(torch.cat([x_T, x_T]), t, context).chunk(2)  # (1, 4, 16, 16) each
    scales = [0, 1, 3, 8]
    x0_hat = torch.cat([(x_T - (1 - alpha_bar).sqrt() * (eps_uncond + s * (eps_cond - eps_uncond))) / alpha_bar.sqrt()
                        for s in scales])  # (4, 4, 16, 16)
    pictures = sd.decode(x0_hat)
print(f"t = {int(t)}, ᾱ_t = {alpha_bar:.4f}")

fig, axes = plt.subplots(1, len(scales) + 1, figsize=(2.0 * (len(scales) + 1), 2.3))
for ax, s, picture in zip(axes, scales, pictures):
    show(ax, picture, {0: "x̂_0, unconditional", 1: "x̂_0, conditional"}.get(s, f"x̂_0, guided s = {s}"))
axes[-1].imshow((eps_cond - eps_uncond)[0].abs().mean(0), cmap="magma")
axes[-1].set_title("|ε_cond − ε_uncond|", fontsize=8)
axes[-1].set_xticks([]), axes[-1].set_yticks([])
fig.suptitle(f'"{PROMPT}", first step (t = {int(t)})', fontsize=9)
fig.tight_layout()
savefig(fig, "07-one-step.png")
plt.show()

# %% [markdown]
# ## The batch of two
#
# The pipeline does not call the U-Net twice: `encode_prompt` stacks the texts as [unconditional; conditional],
# (2B, 77, D), `guided_unet` (minidiff/pipelines/base.py) doubles the latents to (2B, 4, h, w), runs one call and
# splits the output. Two separate calls give the same answer up to float32 rounding. With s ≤ 1 the pipeline
# skips the unconditional half altogether, which halves the cost of every step.

# %%
x = randn((1, 4, 16, 16), torch.Generator().manual_seed(1))
with torch.no_grad():
    batched = sd.guided_unet(context, 5.0)(x, t)  # one U-Net call on a batch of 2
    uncond, cond = sd.unet(x, t, context[:1]), sd.unet(x, t, context[1:])  # two calls on a batch of 1
    by_hand = uncond + 5.0 * (cond - uncond)
error = (batched - by_hand).abs().max() / by_hand.abs().max()
print(f"batch of two vs two calls: max relative difference {error:.1e}")
assert error < 1e-4  # a batch of two may round the last float32 bits differently from a batch of one

# %% [markdown]
# ## A guidance-scale sweep
#
# Four prompts, each from the same start noise (seed 0), at six guidance scales, 10 steps of DPM++ 2M. Each row
# is one prompt; along a row only s changes. Guidance can only push further in the direction in which the prompt
# already changes the prediction: a request the model gets wrong at every scale is one it does not know well
# enough, and no scale will fix it.

# %%
PROMPTS = ["a red circle above a blue square", "a large green triangle on a yellow background",
           "a purple star in the top left", "an orange heart"]
SCALES = [1, 2, 3, 5, 8, 12]
SEED, STEPS = 0, 10
images, latents = {}, {}
for s in SCALES:
    result = sd.text_to_image(PROMPTS, guidance_scale=s, steps=STEPS, sampler="dpmpp_2m", progress=False,
                              generator=[torch.Generator().manual_seed(SEED) for _ in PROMPTS])
    images[s], latents[s] = result.images, result.latents  # (4, 3, 128, 128), (4, 4, 16, 16)

fig, axes = plt.subplots(len(PROMPTS), len(SCALES), figsize=(1.55 * len(SCALES), 1.65 * len(PROMPTS)))
for col, s in enumerate(SCALES):
    for row, prompt in enumerate(PROMPTS):
        show(axes[row, col], images[s][row], f"s = {s}" if row == 0 else None)
for row, prompt in enumerate(PROMPTS):
    words = prompt.split(" ")
    axes[row, 0].set_ylabel(" ".join(words[:3]) + "\n" + " ".join(words[3:]), fontsize=7)
fig.tight_layout(pad=0.3)
savefig(fig, "07-guidance-grid.png")
plt.show()

# %% [markdown]
# ## Adherence and oversaturation, measured
#
# The attribute detector (`minidiff/data/detect.py`) reads each picture back into colours, shapes, sizes and
# positions, and `score` says which requests of its prompt it meets (colour, shape, number of objects, and the
# size, position, relation or background where the prompt asks for one). Per scale we count the share of requests
# met and of pictures that meet every request. Four pictures per scale is a small sample, so read the trend, not
# the exact heights.
#
# Large scales also push colours beyond anything in the training data. The shapes world has eight flat colours,
# so this is easy to measure: the share of pixels farther than 60 (of 255, Euclidean in RGB) from every palette
# colour, and the spread of the final latents, which grows when the extrapolation overshoots.

# %%
def off_palette(batch, threshold=60.0):
    """Share of pixels of (B, 3, H, W) images in [0, 1] farther than `threshold` (0..255 RGB) from every palette colour."""
    pixels = to_uint8(batch).float().reshape(-1, 1, 3)  # (B*H*W, 1, 3)
    return ((pixels - PALETTE).norm(dim=-1).min(-1).values > threshold).float().mean().item()


adherence = {}
for s in SCALES:
    checks = [score(parse_prompt(p), detect_objects(image)) for p, image in zip(PROMPTS, to_uint8(images[s]))]
    requests = [v for c in checks for k, v in c.items() if k != "all"]
    adherence[s] = (sum(requests) / len(requests), sum(c["all"] for c in checks) / len(checks))
    print(f"s = {s:2d}: requests met {100 * adherence[s][0]:5.1f} %, pictures meeting all {100 * adherence[s][1]:5.1f} %, "
          f"off-palette pixels {100 * off_palette(images[s]):5.2f} %, latent std {latents[s].std():.2f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.0))
axes[0].plot(SCALES, [100 * adherence[s][0] for s in SCALES], "o-", label="requests met")
axes[0].plot(SCALES, [100 * adherence[s][1] for s in SCALES], "s--", label="pictures meeting every request")
axes[0].set(title=f"adherence ({len(PROMPTS)} prompts, seed {SEED})", xlabel="guidance scale s", ylabel="%",
            ylim=(-5, 105))
axes[0].legend(fontsize=8)
axes[1].plot(SCALES, [100 * off_palette(images[s]) for s in SCALES], "o-", color="tab:red")
axes[1].set(title="oversaturation", xlabel="guidance scale s", ylabel="off-palette pixels (%)")
twin = axes[1].twinx()
twin.plot(SCALES, [latents[s].std().item() for s in SCALES], "s--", color="tab:gray")
twin.set_ylabel("std of the final latents", color="tab:gray")
fig.tight_layout()
savefig(fig, "07-adherence.png")
plt.show()

# %% [markdown]
# ## Negative prompts
#
# A negative prompt takes the place of the empty text in the unconditional branch:
#
#     ε̂ = ε(x, t, negative) + s · (ε(x, t, prompt) − ε(x, t, negative))
#
# so the sampler is pushed *away* from the negative text as well as towards the prompt. "a circle" leaves the
# colour open; the model has favourite colours. We draw six circles, take the colour the detector finds most
# often, and draw the same six seeds again with that colour as the negative prompt.

# %%
SEEDS = list(range(6))


def circles(negative_prompt):
    result = sd.text_to_image("a circle", negative_prompt=negative_prompt, num_images_per_prompt=len(SEEDS),
                              generator=[torch.Generator().manual_seed(s) for s in SEEDS], guidance_scale=5.0,
                              steps=STEPS, sampler="dpmpp_2m", progress=False)
    found = [detect_objects(image).objects for image in to_uint8(result.images)]
    return result.images, [objects[0].color if objects else "none" for objects in found]


plain, plain_colours = circles(None)
favourite = max(set(plain_colours), key=plain_colours.count)
steered, steered_colours = circles(favourite)
print(f'no negative prompt:        {plain_colours}')
print(f'negative prompt "{favourite}": {steered_colours}')
print(f"{favourite} circles: {plain_colours.count(favourite)} of {len(SEEDS)} without, "
      f"{steered_colours.count(favourite)} of {len(SEEDS)} with the negative prompt")

fig, axes = plt.subplots(2, len(SEEDS), figsize=(1.6 * len(SEEDS), 3.6))
for k in range(len(SEEDS)):
    show(axes[0, k], plain[k], f"seed {SEEDS[k]}: {plain_colours[k]}")
    show(axes[1, k], steered[k], steered_colours[k])
axes[0, 0].set_ylabel('"a circle"', fontsize=8)
axes[1, 0].set_ylabel(f'negative "{favourite}"', fontsize=8)
fig.tight_layout(pad=0.3)
savefig(fig, "07-negative.png")
plt.show()

# %% [markdown]
# Next, write the guidance line yourself: fill in `lessons/exercises/classifier_free_guidance.py` and run
#
#     python -m minidiff.check classifier_free_guidance
