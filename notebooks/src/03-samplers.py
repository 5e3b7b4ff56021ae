# %% [markdown]
# # Lesson 3: samplers
#
# A trained network only answers one question: given a noisy sample and its noise level, what noise does it
# contain (equivalently, what clean sample is underneath)? A *sampler* turns that answer into an image by
# walking from pure noise down to noise level zero. This notebook compares minidiff's samplers: which
# timesteps and noise levels they visit, how their paths look, and how the result improves with more steps.
#
# To see exact numbers we replace the network with the *exact* denoiser of a data set whose density we know:
# a mixture of Gaussians in two dimensions. A perfectly trained network would output exactly this, so every
# difference between samplers below is the sampler's own error. The text is `lessons/03-samplers.md`.

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.integrate import solve_ivp

from minidiff.samplers import SAMPLER_NAMES, SAMPLERS, SchedulerConfig, make_sampler
from minidiff.samplers.base import SigmaSampler
from minidiff.samplers.ddim import DDIMSampler
from minidiff.samplers.euler import EulerSampler
from minidiff.schedule import NoiseSchedule

SD = SchedulerConfig()  # Stable Diffusion's schedule: scaled_linear betas 0.00085 .. 0.012, T = 1000
COLORS = dict(zip(SAMPLER_NAMES, plt.get_cmap("tab20").colors))
CLASSIC = ("ddpm", "ddim", "euler", "euler_a", "heun", "lms", "dpmpp_2m")  # the first seven, shown sample by sample
# every sampler but LCM, which needs a consistency-distilled network (and at most 50 steps)
MEASURED = tuple(name for name in SAMPLER_NAMES if name != "lcm")

# %% [markdown]
# ## Which timesteps, which noise levels
#
# Every sampler calls the network at a few of the 1000 training timesteps. The ᾱ-samplers (DDPM, DDIM) jump
# between integer timesteps; the σ-samplers (Euler, Euler ancestral, Heun, LMS) and DPM++ 2M think in noise
# levels σ_t = sqrt((1 - ᾱ_t) / ᾱ_t). With `karras=True` the σ's are spaced evenly in σ^(1/7) instead
# (Karras et al., 2022), which puts more steps at low noise, where the fine detail is decided. Heun calls the
# network twice per step.

# %%
def sigma_of_timestep(config, t):
    """σ at (possibly fractional) timesteps t, interpolated linearly between training steps as the σ-samplers do."""
    sigmas = NoiseSchedule.from_config(config).sigmas.double().numpy()
    return np.interp(np.asarray(t, dtype=np.float64), np.arange(len(sigmas)), sigmas)


# samplers that share a schedule share a line: DDPM and DDIM; Euler, Euler ancestral and LMS
variants = [("ddpm, ddim", "ddim", False), ("pndm", "pndm", False), ("euler, euler_a, lms", "euler", False),
            ("heun", "heun", False), ("dpmpp_2m, unipc, deis", "dpmpp_2m", False), ("euler + karras", "euler", True),
            ("dpmpp_2m + karras", "dpmpp_2m", True)]
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for label, name, karras in variants:
    sampler = make_sampler(name, SD, steps=12, karras=karras)
    t = sampler.timesteps.double().numpy()
    label = f"{label} ({sampler.config.timestep_spacing})"
    style = dict(marker=".", ls="--" if karras else "-", color=COLORS[name], label=label)
    axes[0].plot(t, **style)
    axes[1].plot(sigma_of_timestep(SD, t), **style)
    print(f"{label:32s} {len(t):2d} calls, timesteps {np.round(t, 1).tolist()}")
axes[0].set(title="timestep of each network call (12 steps)", xlabel="call", ylabel="t")
axes[1].set(title="noise level σ of each call", xlabel="call", ylabel="σ", yscale="log")
axes[1].legend(fontsize=8)
fig.tight_layout()
savefig(fig, "03-timesteps-sigmas.png")
plt.show()

# %% [markdown]
# ## A data set with an exact denoiser
#
# The data: eight Gaussians of standard deviation s = 0.2 on a circle of radius 1.4. Noise it to level σ,
# x = x_0 + σ ε, and each component stays Gaussian with variance s² + σ², so the best possible prediction of x_0
# is a weighted average of each component's own best guess:
#
#     E[x_0 | x] = Σ_k w_k(x) (μ_k + s² / (s² + σ²) (x - μ_k)),     w_k ∝ exp(-|x - μ_k|² / (2 (s² + σ²)))
#
# and the noise it implies is ε = (x - E[x_0 | x]) / σ. `MixtureDenoiser` answers the sampler's call
# `model_fn(x_in, t)` with that ε; the sampler hands it x_in = x / sqrt(σ² + 1), the scaling the network was
# trained on.

# %%
class MixtureDenoiser:
    """The exact ε-prediction for a 2-D Gaussian mixture (means (K, 2), one std s), as a sampler's model_fn."""

    def __init__(self, means, std, config):
        self.means, self.std, self.config = means, std, config
        self.calls = 0

    def denoise(self, x, sigma):
        """E[x_0 | x_0 + σ ε = x] for x (N, 2)."""
        var = self.std**2 + sigma**2
        offset = x[:, None, :] - self.means  # (N, K, 2)
        w = torch.softmax(-(offset**2).sum(-1) / (2 * var), dim=1)  # (N, K) posterior of the components
        return (w[..., None] * (self.means + self.std**2 / var * offset)).sum(1)

    def __call__(self, x_in, t):
        self.calls += 1
        sigma = float(sigma_of_timestep(self.config, float(t)))
        x = x_in * (sigma**2 + 1) ** 0.5  # back to x = x_0 + σ ε
        return (x - self.denoise(x, sigma)) / sigma

    def sample_data(self, n, generator):
        k = torch.randint(len(self.means), (n,), generator=generator)
        return self.means[k] + self.std * torch.randn(n, 2, generator=generator, dtype=torch.float64)


angles = torch.arange(8, dtype=torch.float64) * 2 * torch.pi / 8
means = 1.4 * torch.stack([angles.cos(), angles.sin()], dim=1)  # (8, 2)

# Start every sampler at the very top of the schedule (linspace spacing: t = 999 first) and end at σ = 0
# (DDIM: ᾱ = 1 after its last step), so that all of them solve the same problem.
CONFIG = SchedulerConfig(timestep_spacing="linspace", set_alpha_to_one=True)
model = MixtureDenoiser(means, 0.2, CONFIG)
data = model.sample_data(4000, torch.Generator().manual_seed(0))
sigma_max = float(sigma_of_timestep(CONFIG, 999))
print(f"σ at t = 999: {sigma_max:.2f}")


def start_point(sampler, z):
    """The same standard-normal start z for every sampler; σ-samplers hold x = x_0 + σ ε, i.e. z sqrt(σ_max² + 1)."""
    return z * (sigma_max**2 + 1) ** 0.5 if isinstance(sampler, SigmaSampler) else z


def run(name, steps, z, karras=False):
    """Samples (N, 2) from the start z (N, 2), and the sampler."""
    sampler = make_sampler(name, CONFIG, steps, karras=karras)
    return sampler.sample(model, start_point(sampler, z), generator=torch.Generator().manual_seed(0)), sampler

# %% [markdown]
# ## Samples with 10 and 50 steps

# %%
z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
fig, axes = plt.subplots(2, len(CLASSIC), figsize=(2.1 * len(CLASSIC), 4.4), sharex=True, sharey=True)
for row, steps in zip(axes, (10, 50)):
    for ax, name in zip(row, CLASSIC):
        samples, _ = run(name, steps, z)
        ax.scatter(data[:, 0], data[:, 1], s=1, c="lightgray")
        ax.scatter(samples[:, 0], samples[:, 1], s=1, c=COLORS[name])
        ax.set_title(f"{name}, {steps} steps", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_aspect("equal")
fig.tight_layout()
savefig(fig, "03-samples-2d.png")
plt.show()

# %% [markdown]
# ## Trajectories
#
# The path of 16 starting points (circles) to their samples (dots), shown in the network's own scaling x / sqrt(σ² + 1) (so that every sampler's
# path starts at the same noise point). The deterministic samplers follow smooth curves, the solutions of the
# probability-flow ODE; DDPM and Euler ancestral inject fresh noise at every step and wander.

# %%
z16 = torch.randn(16, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
shown = ["ddim", "euler", "dpmpp_2m", "ddpm", "euler_a"]
fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 2.8), sharex=True, sharey=True)
for ax, name in zip(axes, shown):
    sampler, path = make_sampler(name, CONFIG, 20), [z16]

    def record(i, t, x, x0):
        if isinstance(sampler, SigmaSampler):  # σ-space latent: divide by sqrt(σ² + 1)
            x = x / (float(sampler.sigmas[i + 1]) ** 2 + 1) ** 0.5
        path.append(x.clone())

    sampler.sample(model, start_point(sampler, z16), generator=torch.Generator().manual_seed(3), callback=record)
    path = torch.stack(path)  # (steps + 1, 16, 2)
    ax.scatter(data[:, 0], data[:, 1], s=1, c="lightgray")
    ax.plot(path[:, :, 0], path[:, :, 1], lw=0.8, color=COLORS[name])
    ax.scatter(path[0, :, 0], path[0, :, 1], s=10, facecolors="none", edgecolors="k", zorder=3)  # start
    ax.scatter(path[-1, :, 0], path[-1, :, 1], s=8, c="k", zorder=3)  # end
    ax.set_title(f"{name}, 20 steps", fontsize=9)
    ax.set_aspect("equal")
fig.tight_layout()
savefig(fig, "03-trajectories.png")
plt.show()

# %% [markdown]
# ## The update rules next to the code
#
# DDIM (eta = 0) and Euler are the two basic deterministic updates. DDIM goes through the predicted clean
# sample, x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t), then x_prev = sqrt(ᾱ_prev) x̂_0 + sqrt(1 - ᾱ_prev) ε. Euler follows
# the slope dx/dσ = (x - x̂_0) / σ: x_next = x + (σ_next - σ) dx/dσ. Here is the loop of each, from minidiff:

# %%
for cls in (DDIMSampler, EulerSampler):
    print(inspect.getsource(cls.sample))

# %% [markdown]
# ## More steps, smaller error
#
# For the deterministic samplers the exact answer is known: the solution of the ODE dx/dσ = (x - E[x_0 | x]) / σ
# from σ_max down to 0, which scipy solves to 8 digits. The error of each sampler against it falls like
# (1 / calls)^order: first order for Euler, second order for Heun, higher for LMS once its history fills up.
# Two details of the schedules (the same in diffusers) show too. DDIM always jumps from t to t - 1000 // steps,
# which with linspace timesteps misses the next timestep a little, so its error stops falling. DPM++ 2M ends
# with a first-order jump from its last timestep (about 1000 / steps) straight to σ = 0, which limits it to first
# order; with Karras sigmas its last σ before 0 is always the smallest training σ, and it converges at second
# order (down to a floor: its timesteps are rounded to integers, so the network sees a slightly different σ
# than the solver uses). The curves that get down to about 1e-3 meet the error of the very last jump, from the
# smallest training σ (0.03) to 0, which no number of steps changes.
#
# For all samplers, the stochastic ones too, the right panel measures how far the sample *distribution* is
# from the data (the sliced Wasserstein distance; the dotted line is its floor for 2000 samples). The second wave
# is in too: the multistep PNDM, DEIS and UniPC reach high order at one call per step; DPM2 and DPM++ 2S spend two
# calls a step on a midpoint; the SDE samplers add noise like the ancestral ones.

# %%
z500 = z[:500]


def ode_reference(z, sigma_end=1e-4):
    """The probability-flow ODE solved accurately from σ_max to 0, starting at x = z sqrt(σ_max² + 1)."""
    def slope(sigma, x):
        x = torch.from_numpy(x).view(-1, 2)
        return ((x - model.denoise(x, sigma)) / sigma).reshape(-1).numpy()

    start = (z * (sigma_max**2 + 1) ** 0.5).reshape(-1).numpy()
    solution = solve_ivp(slope, (sigma_max, sigma_end), start, rtol=1e-9, atol=1e-9)
    return model.denoise(torch.from_numpy(solution.y[:, -1]).view(-1, 2), sigma_end)


def sliced_wasserstein(a, b, directions=64):
    """Average over random directions of the 1-D Wasserstein-1 distance between the projected point sets."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(directions, 2, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    n = min(len(a), len(b))
    pa, pb = (a[:n] @ u.T).sort(0).values, (b[:n] @ u.T).sort(0).values
    return float((pa - pb).abs().mean())


reference = ode_reference(z500)
step_counts = [4, 8, 16, 32, 64, 128]
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for name, karras in [(n, False) for n in MEASURED] + [("dpmpp_2m", True)]:
    calls, errors, distances = [], [], []
    for steps in step_counts:
        samples, sampler = run(name, steps, z, karras=karras)
        calls.append(len(sampler.timesteps))
        errors.append(float((samples[:500] - reference).norm(dim=1).mean()))
        distances.append(sliced_wasserstein(samples, data))
    label = name + (" + karras" if karras else "")
    style = dict(marker="o", ms=3, color=COLORS[name], ls="--" if karras else "-", label=label)
    if not SAMPLERS[name].stochastic:
        axes[0].plot(calls, errors, **style)
    axes[1].plot(calls, distances, **style)
    if not SAMPLERS[name].stochastic:
        print(f"{label:17s} error vs the ODE: " + "  ".join(f"{e:.1e}" for e in errors))
floor = sliced_wasserstein(model.sample_data(2000, torch.Generator().manual_seed(9)), data)
axes[1].axhline(floor, color="k", ls=":", lw=1)
axes[0].set(title="deterministic samplers: mean distance to the exact ODE solution", xlabel="network calls",
            xscale="log", yscale="log")
axes[1].set(title="all samplers: sliced Wasserstein distance to the data", xlabel="network calls",
            xscale="log", yscale="log")
axes[0].legend(fontsize=7, ncol=2)
axes[1].legend(fontsize=7, ncol=2)
fig.tight_layout()
savefig(fig, "03-steps-vs-quality.png")
plt.show()

# %% [markdown]
# Now write the two basic updates yourself, and one PLMS step: fill in `lessons/exercises/ddim_step.py`,
# `lessons/exercises/euler_step.py` and `lessons/exercises/plms_step.py`, then run
#
#     python -m minidiff.check ddim_step
#     python -m minidiff.check euler_step
#     python -m minidiff.check plms_step
