# %% [markdown]
# # Lesson 1: forward diffusion and noise schedules
#
# A diffusion model learns to undo a fixed process that slowly drowns an image in Gaussian noise. This notebook
# builds that forward process with `minidiff.schedule`: the three beta schedules, ᾱ_t and the signal-to-noise
# ratio, the zero-terminal-SNR fix, what a noised image looks like, and why one jump to x_t gives the same
# result as a thousand small steps. The text of the lesson is `lessons/01-forward-diffusion.md`.

# %%
import matplotlib.pyplot as plt
import torch

from minidiff.data.shapes import sample_batch
from minidiff.schedule import NoiseSchedule, make_betas, rescale_zero_terminal_snr

T = 1000
SCHEDULES = {
    "linear (DDPM)": NoiseSchedule(make_betas("linear", T, beta_start=1e-4, beta_end=0.02)),
    "scaled_linear (Stable Diffusion)": NoiseSchedule(make_betas("scaled_linear", T, 0.00085, 0.012)),
    "cosine (squaredcos_cap_v2)": NoiseSchedule(make_betas("squaredcos_cap_v2", T)),
}
for name, schedule in SCHEDULES.items():
    ab = schedule.alphas_cumprod
    print(f"{name:34s} β_0 = {schedule.betas[0]:.5f}  β_999 = {schedule.betas[-1]:.4f}  "
          f"ᾱ_999 = {ab[-1]:.2e}  SNR_999 = {schedule.snr[-1]:.2e}")

# %% [markdown]
# ## β_t, ᾱ_t and the signal-to-noise ratio
#
# Each step multiplies the signal by sqrt(1 - β_t) and adds noise of variance β_t. After t steps the signal
# that is left is ᾱ_t = ∏(1 - β_s), and SNR(t) = ᾱ_t / (1 - ᾱ_t). The SNR spans ten orders of magnitude, so it is
# plotted on a log scale: the cosine schedule keeps it falling at a steady rate in log space, while the linear
# schedule destroys most of the signal in the first third of the steps.

# %%
t = torch.arange(T)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for name, schedule in SCHEDULES.items():
    axes[0].plot(t, schedule.betas, label=name)
    axes[1].plot(t, schedule.alphas_cumprod, label=name)
    axes[2].plot(t, schedule.snr, label=name)
axes[0].set(title="β_t", xlabel="t", yscale="log")
axes[1].set(title="ᾱ_t = ∏ (1 - β_s): signal power left", xlabel="t")
axes[2].set(title="SNR(t) = ᾱ_t / (1 - ᾱ_t)", xlabel="t", yscale="log")
axes[1].legend(fontsize=8)
fig.tight_layout()
savefig(fig, "01-schedules.png")
plt.show()

# %% [markdown]
# ## Zero terminal SNR
#
# With Stable Diffusion's schedule ᾱ_999 ≈ 0.0047: at the "pure noise" end, x_999 still holds sqrt(0.0047) ≈ 7 % of
# the image. Training never shows the network true noise, yet sampling starts from it; the overall brightness of
# an image leaks through, and such models struggle to make very dark or very bright pictures. Lin et al. (2023)
# rescale sqrt(ᾱ_t) linearly so that its last value is exactly 0 while the first stays put
# (`rescale_zero_terminal_snr`).

# %%
sd_betas = make_betas("scaled_linear", T, 0.00085, 0.012)
sd, rescaled = NoiseSchedule(sd_betas), NoiseSchedule(rescale_zero_terminal_snr(sd_betas))
print(f"sqrt(ᾱ_999): {sd.alphas_cumprod[-1].sqrt():.4f} before, {rescaled.alphas_cumprod[-1].sqrt():.4f} after")
print(f"sqrt(ᾱ_0):   {sd.alphas_cumprod[0].sqrt():.6f} before, {rescaled.alphas_cumprod[0].sqrt():.6f} after")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for label, schedule in (("scaled_linear", sd), ("rescaled to zero terminal SNR", rescaled)):
    axes[0].plot(t, schedule.alphas_cumprod.sqrt(), label=label)
    axes[1].plot(t[:-1], schedule.snr[:-1], label=label)  # the rescaled SNR at t = 999 is 0: off a log axis
axes[0].set(title="sqrt(ᾱ_t): how much of x_0 is left", xlabel="t")
axes[0].set_ylim(-0.02, 0.2)
axes[0].set_xlim(700, 1000)
axes[1].set(title="SNR(t), log scale", xlabel="t", yscale="log")
axes[1].legend(fontsize=8)
fig.tight_layout()
savefig(fig, "01-zero-terminal-snr.png")
plt.show()

# %% [markdown]
# How much does that 7 % matter? Average x_999 over all pixels: the noise averages away (its mean over N pixels
# has standard deviation 1/sqrt(N)), the image's mean brightness does not.

# %%
dark = -torch.ones(1, 3, 64, 64) * 0.8  # a nearly black image, in [-1, 1]
bright = torch.ones(1, 3, 64, 64) * 0.8
noise = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
for label, schedule in (("scaled_linear", sd), ("zero terminal SNR", rescaled)):
    means = [schedule.add_noise(x0, noise, T - 1).mean().item() for x0 in (dark, bright)]
    print(f"{label:18s} mean of x_999: dark image {means[0]:+.3f}, bright image {means[1]:+.3f}")

# %% [markdown]
# ## What x_t looks like
#
# x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε, on an image of the procedural shapes data set (pixels in [-1, 1]).
# The same noise ε is used at every t, so only the mixing changes along a row.

# %%
images, captions, _ = sample_batch(3, 1, size=64)
x0 = images[:1]  # (1, 3, 64, 64)
print(captions[0])
eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
shown = [0, 50, 100, 200, 300, 400, 500, 700, 999]

fig, axes = plt.subplots(len(SCHEDULES), len(shown), figsize=(0.9 * len(shown), 1.05 * len(SCHEDULES)))
for row, (name, schedule) in zip(axes, SCHEDULES.items()):
    for ax, step in zip(row, shown):
        x_t = schedule.add_noise(x0, eps, step)
        ax.imshow(((x_t[0].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        if row is axes[0]:
            ax.set_title(f"t = {step}", fontsize=8)
    row[0].set_ylabel(name.split(" ")[0], fontsize=7)
fig.tight_layout(pad=0.2)
savefig(fig, "01-noising.png")
plt.show()

# %% [markdown]
# ## One jump or a thousand steps
#
# The forward process is defined step by step, q(x_t | x_{t-1}) = N(sqrt(1 - β_t) x_{t-1}, β_t I), but a sum of
# independent Gaussians is Gaussian: the scales multiply to sqrt(ᾱ_t) and the variances add up to 1 - ᾱ_t. So
#
#     q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I)
#
# which training uses to jump straight to any t. Below, 1000 noisy copies of one small image (8 x 8 pixels) walk
# through all 1000 steps with `step_forward`; their per-pixel mean and standard deviation are compared with the
# closed form.

# %%
schedule = SCHEDULES["scaled_linear (Stable Diffusion)"]
x0_small = torch.nn.functional.interpolate(x0, size=8, mode="area")  # (1, 3, 8, 8)
g = torch.Generator().manual_seed(2)
x = x0_small.expand(1000, -1, -1, -1).clone()  # (1000, 3, 8, 8): 1000 independent chains
checkpoints = {99: None, 299: None, 599: None, 999: None}
for step in range(T):
    x = schedule.step_forward(x, torch.randn(x.shape, generator=g), step)
    if step in checkpoints:
        checkpoints[step] = x.clone()

fig, axes = plt.subplots(1, len(checkpoints), figsize=(13, 2.8))
pixel = (0, 0, 4, 4)  # (batch, channel, row, column) of one pixel
for ax, (step, chains) in zip(axes, checkpoints.items()):
    ab = schedule.alphas_cumprod[step]
    mean, std = ab.sqrt() * x0_small, (1 - ab).sqrt()
    print(f"t = {step:3d}: largest |mean error| {(chains.mean(0) - mean[0]).abs().max():.3f}, "
          f"std of the chains {chains.std(0).mean():.4f} vs sqrt(1 - ᾱ_t) = {std:.4f}")
    ax.hist(chains[:, 0, 4, 4].numpy(), bins=40, density=True, alpha=0.6, label="1000 small steps")
    grid = torch.linspace(-4, 4, 200)
    density = torch.exp(-((grid - mean[pixel]) ** 2) / (2 * std**2)) / (std * (2 * torch.pi) ** 0.5)
    ax.plot(grid, density, "k", label="closed form")
    ax.set(title=f"one pixel at t = {step}", xlim=(-4, 4))
axes[0].legend(fontsize=8)
fig.tight_layout()
savefig(fig, "01-closed-form.png")
plt.show()

# %% [markdown]
# The chains agree with the closed form up to sampling error (about 3 / sqrt(1000) ≈ 0.1 for the worst of 192
# pixels). Next, write the forward process yourself: fill in `lessons/exercises/add_noise.py` and run
#
#     python -m minidiff.check add_noise
