# %% [markdown]
# # Lesson 2: training a tiny DDPM
#
# Lesson 1 built the forward process that turns an image into noise. Here a small network learns to run it
# backwards, trained from scratch on the CPU in about half a minute: a DDPM (Ho et al., 2020) in pixel space, on
# 16 x 16 pictures of one red or blue circle, square or triangle. The text of the lesson is
# `lessons/02-tiny-ddpm.md`; the data and the network are in `minidiff/tiny_ddpm.py`, the training loop is below.

# %%
import copy
import inspect
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from minidiff.samplers import make_sampler
from minidiff.schedule import NoiseSchedule
from minidiff.tiny_ddpm import TinyDDPMConfig, TinyUNet, image_grid, scheduler_config, simple_shapes

# 200 steps of 16 pictures: about half a minute on two CPU cores, enough for the right colours and rough shapes.
# For clean shapes train longer: TinyDDPMConfig(steps=1500, batch_size=32) takes several minutes.
config = TinyDDPMConfig(steps=200, batch_size=16, lr=3e-3, ema_decay=0.9)
print(config)

# %% [markdown]
# ## The data
#
# Every batch is drawn fresh by `simple_shapes`, with minidiff's renderer of the captioned-shapes data set:
# one large shape, in one of two colours, anywhere on a white square. Pixels are scaled to [-1, 1].

# %%
examples = simple_shapes(np.random.default_rng(123), 24, config)
print("a batch:", tuple(examples.shape), f"values in [{examples.min():.0f}, {examples.max():.0f}]")
fig, ax = plt.subplots(figsize=(9, 2.6))
ax.imshow(image_grid(examples, 12), interpolation="nearest")
ax.set_title("training images (16 x 16 pixels)", fontsize=10)
ax.axis("off")
savefig(fig, "02-data.png")
plt.show()

# %% [markdown]
# ## The network
#
# `TinyUNet` is the U-Net idea at its smallest: a ResNet block per level on the way down, keeping each output as
# a skip connection, one in the middle at 8 x 8, and a ResNet block per level on the way up that also reads the
# skip. Every block adds an embedding of the timestep t: the same network must denoise slightly noisy and almost
# pure-noise images, and t tells it which. Its blocks are the ones Stable Diffusion's U-Net is made of.

# %%
torch.manual_seed(config.seed)
model = TinyUNet(config)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")
print(inspect.getsource(TinyUNet.forward))

# %% [markdown]
# ## Training
#
# One step of DDPM training: draw clean images x_0, a random timestep t for each, and noise ε; make
# x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε in one jump (lesson 1); ask the network for ε; the loss is the mean
# squared error. That is all:
#
#     L(θ) = E_{x_0, t, ε} || ε - ε_θ(sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε, t) ||²
#
# Two standard helpers: the learning rate warms up and then decays (one-cycle schedule), and the weights we
# sample with are an exponential moving average (EMA) of the trained ones, which smooths out the last steps'
# noise. (With a run this short the average must be short too: decay 0.9 averages about the last ten steps.)

# %%
schedule = NoiseSchedule.from_config(scheduler_config(config))
ema = copy.deepcopy(model).requires_grad_(False)
optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
lr_schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps, pct_start=0.1)
rng, generator = np.random.default_rng(config.seed), torch.Generator().manual_seed(config.seed)

losses, start = [], time.perf_counter()
for step in range(config.steps):
    x0 = simple_shapes(rng, config.batch_size, config)  # (B, 3, 16, 16) in [-1, 1]
    noise = torch.randn(x0.shape, generator=generator)  # ε
    t = torch.randint(0, schedule.num_train_timesteps, (config.batch_size,), generator=generator)  # (B,)
    x_t = schedule.add_noise(x0, noise, t)
    target = schedule.target(x0, noise, t, config.prediction_type)  # ε for "epsilon"
    loss = F.mse_loss(model(x_t, t), target)

    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    lr_schedule.step()
    with torch.no_grad():  # ema <- decay * ema + (1 - decay) * weights
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - config.ema_decay)
    losses.append(loss.item())
    if (step + 1) % 50 == 0:
        print(f"step {step + 1:4d}  loss {np.mean(losses[-50:]):.4f}  {time.perf_counter() - start:5.1f} s")

# %% [markdown]
# ## The loss
#
# Left: the training loss (each step is a new random batch, so it is noisy; the line is a running mean). Right:
# the trained network's loss at each noise level, on a fixed batch. Predicting ε is hardest when there is
# little noise (small t: the noise is a tiny part of x_t) and easiest near pure noise (x_t is almost ε itself).

# %%
steps = np.arange(1, len(losses) + 1)
running = np.convolve(losses, np.ones(25) / 25, mode="valid")
eval_x0 = simple_shapes(np.random.default_rng(7), 32, config)
eval_noise = torch.randn(eval_x0.shape, generator=torch.Generator().manual_seed(7))
levels = np.arange(0, 1000, 50)
with torch.no_grad():
    per_level = [F.mse_loss(ema(schedule.add_noise(eval_x0, eval_noise, int(t)), int(t)),
                            schedule.target(eval_x0, eval_noise, torch.tensor(int(t)), config.prediction_type)).item()
                 for t in levels]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.3))
axes[0].plot(steps, losses, lw=0.5, alpha=0.4)
axes[0].plot(steps[24:], running)
axes[0].set(title="training loss", xlabel="step", yscale="log")
axes[1].plot(levels, per_level, marker=".")
axes[1].set(title="loss of the trained (EMA) network by timestep", xlabel="t", yscale="log")
fig.tight_layout()
savefig(fig, "02-loss.png")
plt.show()

# %% [markdown]
# ## Sampling
#
# minidiff's samplers (lesson 3) only need a function `model_fn(x, t)` that returns the network's prediction,
# so the tiny network plugs straight in. DDPM draws fresh noise at each of its 100 steps; DDIM is
# deterministic and here takes 25. Both start at t = 999 (trailing spacing) from the same noise.
#
# The sampler's callback sees, after every step, the current x_t and the network's guess of the clean image
# x̂_0; `keep` stores them every 20 steps of the DDPM run for the next figure.

# %%
sampler_config = scheduler_config(config)
start_noise = torch.randn(24, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(1))
frames = []  # (t, x after the step, predicted x̂_0) for the first four samples


def keep(i, t, x, x0_pred):
    if i % 20 == 19:
        frames.append((int(t), x[:4].clone(), x0_pred[:4].clone()))


fig, axes = plt.subplots(2, 1, figsize=(9, 3.7))
for ax, (name, n_steps) in zip(axes, (("ddpm", 100), ("ddim", 25))):
    with torch.no_grad():
        images = make_sampler(name, sampler_config, n_steps).sample(
            ema, start_noise, generator=torch.Generator().manual_seed(2), callback=keep if name == "ddpm" else None)
    ax.imshow(image_grid(images, 12), interpolation="nearest")
    ax.set_title(f"{name}, {n_steps} steps", fontsize=10)
    ax.axis("off")
fig.tight_layout()
savefig(fig, "02-samples.png")
plt.show()

# %% [markdown]
# After only a few hundred steps of training the network has learnt the colours, that there is one blob on a
# white square and roughly where its edges go. DDPM's pictures look cleaner than DDIM's: the fresh noise DDPM
# adds at every step lets each later step correct the network's mistakes, while DDIM follows its predictions
# exactly and keeps their errors as grain. Train for 1500 steps of 32 pictures and both give crisp circles,
# squares and triangles.
#
# ## Watching one sample form
#
# Early guesses x̂_0 are a blurry average of everything the data could be; the colour and the place are decided
# in the first half of the steps, the outline and the clean background at the end.

# %%
fig, axes = plt.subplots(2, len(frames), figsize=(1.9 * len(frames), 4.4))
for column, (t, x, x0_pred) in enumerate(frames):
    axes[0, column].imshow(image_grid(x, 2), interpolation="nearest")
    axes[0, column].set_title(f"x after t = {t}", fontsize=9)
    axes[1, column].imshow(image_grid(x0_pred, 2), interpolation="nearest")
    axes[1, column].set_title("predicted x̂_0", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()
savefig(fig, "02-denoising.png")
plt.show()

# %% [markdown]
# Things to try: train longer (`TinyDDPMConfig(steps=1500, batch_size=32)`, several minutes); predict v or x_0
# instead of ε (`prediction_type="v_prediction"` or `"sample"`: the samplers read it from the config; v learns
# faster on a short budget, x_0 gives blurry averages); Stable Diffusion's schedule
# (`beta_schedule="scaled_linear"`), which never reaches pure noise (lesson 1); or fewer DDIM steps.
