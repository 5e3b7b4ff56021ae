# %% [markdown]
# # Lesson 4: the VAE and latent space
#
# Stable Diffusion does not diffuse pixels. A variational autoencoder (VAE) first squeezes each picture into a
# *latent*, 8 times smaller in each side with 4 channels, the diffusion model works there, and the VAE's
# decoder turns the final latent back into pixels. This notebook takes the bundled model's VAE apart on
# pictures of the shapes data set: what the encoder's layers do to the shape, what the 4 latent channels look
# like, how good the reconstruction is, the diagonal Gaussian the encoder really outputs and its KL term, why
# the latents are multiplied by a *scaling factor*, and what the decoder makes of latents that no picture
# produced. The text of the lesson is `lessons/04-vae.md`.

# %%
import matplotlib.pyplot as plt
import torch

from minidiff.data.shapes import sample_batch
from minidiff.loading.components import load_network_folder, skip_random_init
from minidiff.models.config import VAEConfig
from minidiff.models.vae import AutoencoderKL
from minidiff.samplers import SchedulerConfig
from minidiff.schedule import NoiseSchedule

torch.manual_seed(0)
# The same loader the pipelines use for each component folder: config.json -> VAEConfig, then the weights, strictly.
vae = load_network_folder(ROOT / "weights" / "vae", "vae", torch.float32, "cpu", allow_pickle=False, variant=None)
config = vae.config
print(f"block_out_channels {config.block_out_channels}, layers_per_block {config.layers_per_block}, "
      f"latent_channels {config.latent_channels}, scaling_factor {config.scaling_factor:.4f}")
print(f"bundled VAE: {sum(p.numel() for p in vae.parameters()) / 1e6:.1f} M parameters")


def show(ax, image, title=None):
    """Draw an image (3, H, W) in [-1, 1] without axes."""
    ax.imshow(((image + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)

# %% [markdown]
# ## Following one picture through the encoder
#
# Each block of the encoder runs ResNet blocks and then halves the resolution (all but the last); a middle
# block with self-attention follows, then a convolution to 2 × 4 channels: the mean and the log-variance of 4
# latent channels. Forward hooks print the shape after each stage. Three halvings give the factor 2³ = 8.

# %%
images, captions, _ = sample_batch(7, 6, size=128)  # (6, 3, 128, 128) in [-1, 1]
stages = [("conv_in", vae.encoder.conv_in), *((f"down_blocks.{i}", b) for i, b in enumerate(vae.encoder.down_blocks)),
          ("mid_block", vae.encoder.mid_block), ("conv_out", vae.encoder.conv_out), ("quant_conv", vae.quant_conv)]
hooks = [module.register_forward_hook(lambda m, i, out, name=name: print(f"  {name:13s} -> {tuple(out.shape)}"))
         for name, module in stages]
print(f"  {'image':13s}    {tuple(images[:1].shape)}")
with torch.no_grad():
    vae.encode(images[:1])
for hook in hooks:
    hook.remove()

# %% [markdown]
# Stable Diffusion's own VAE is the same design, wider (128-256-512-512 channels, 2 ResNets per block). Built on
# the `meta` device it costs no memory, and shapes still flow through it: a 512 × 512 picture becomes a
# 64 × 64 × 4 latent.

# %%
with torch.device("meta"), skip_random_init():
    sd_vae = AutoencoderKL(VAEConfig())  # the defaults are Stable Diffusion 1.x/2.x's VAE
    sd_latent = sd_vae.encode(torch.empty(1, 3, 512, 512)).mean
print(f"Stable Diffusion VAE: {sum(p.numel() for p in sd_vae.parameters()) / 1e6:.1f} M parameters, "
      f"(1, 3, 512, 512) -> {tuple(sd_latent.shape)}")
for name, (h, c) in {"bundled model": (128, 4), "Stable Diffusion": (512, 4)}.items():
    pixels, latents = h * h * 3, (h // 8) ** 2 * c
    print(f"{name:16s} {h}x{h}x3 = {pixels:7d} numbers -> {h // 8}x{h // 8}x{c} = {latents:5d}: "
          f"{pixels / latents:.0f}x fewer; {h * h} pixel positions -> {(h // 8) ** 2} latent positions")

# %% [markdown]
# ## Encode, look at the 4 channels, decode
#
# Below: six pictures, the 4 channels of their latents (as the diffusion model sees them, i.e. multiplied by
# the scaling factor; red positive, blue negative, one colour scale per channel), the reconstructions
# `decode(mean)` and the error, magnified 5 times. The latents are small pictures in their own right: each channel is a blurred, recoloured map of the
# scene, and the shapes are recognisable in them.

# %%
with torch.no_grad():
    posterior = vae.encode(images)  # a DiagonalGaussian over (6, 4, 16, 16)
    reconstruction = vae.decode(posterior.mean)  # (6, 3, 128, 128)
latents = vae.scale_latents(posterior.mean)  # (6, 4, 16, 16), what the U-Net is trained on
error = (reconstruction - images).abs()  # (6, 3, 128, 128)
mse = (reconstruction - images).pow(2).mean(dim=(1, 2, 3))
psnr = 10 * torch.log10(2**2 / mse)  # pixel range [-1, 1] has peak-to-peak 2
print(f"mean |error| per picture: {error.mean(dim=(1, 2, 3)).numpy().round(4)}  (pixels in [-1, 1])")
print(f"PSNR per picture: {psnr.numpy().round(1)} dB")

rows = ["picture", "latent 0", "latent 1", "latent 2", "latent 3", "decoded", "|error| x 5"]
fig, axes = plt.subplots(len(rows), len(images), figsize=(1.45 * len(images), 1.45 * len(rows)))
limits = latents.abs().amax(dim=(0, 2, 3))  # (4,): the largest |value| of each channel over the six latents
for col in range(len(images)):
    show(axes[0, col], images[col])
    for ch in range(4):
        axes[1 + ch, col].imshow(latents[col, ch].numpy(), cmap="RdBu_r", vmin=-limits[ch], vmax=limits[ch],
                                 interpolation="nearest")
    show(axes[5, col], reconstruction[col])
    axes[6, col].imshow((5 * error[col].mean(0)).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
for row, label in zip(axes[:, 0], rows):
    row.set_ylabel(label, fontsize=8)
fig.tight_layout(pad=0.2)
savefig(fig, "04-reconstruction.png")
plt.show()

# %% [markdown]
# ## A diagonal Gaussian, not a point
#
# The encoder's last convolution gives 8 channels: a mean μ and a log-variance log σ² for each of the 4
# latent channels. That defines q(z | x) = N(μ, diag(σ²)), and a latent is *drawn* from it:
# z = μ + σ · ε (`DiagonalGaussian.sample`). Training adds the KL divergence to N(0, I), in closed form
#
#     KL(q || N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²)
#
# but with a tiny weight (10⁻⁶ per latent element here; Stable Diffusion's VAE was trained similarly). So the
# encoder is free to make σ small and spread the means widely. Compare the σ's in the histogram with the spread
# of the means (the dashed line): where σ is far below it, a sample hardly moves the latent, and `decode(sample)`
# hardly differs from `decode(mean)`. The largest pixel difference printed below says how well that holds.

# %%
mu, logvar, sigma = posterior.mean, posterior.logvar, posterior.std  # (6, 4, 16, 16) each
kl_by_hand = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))  # (6,)
print(f"KL per picture (nats): {kl_by_hand.numpy().round(0)}; equals posterior.kl(): "
      f"{torch.allclose(kl_by_hand, posterior.kl())}; per latent element {kl_by_hand.mean() / mu[0].numel():.2f}")
print(f"σ of q(z|x): median {sigma.median():.4f}, largest {sigma.max():.3f}; spread of the means: std {mu.std():.3f}")
with torch.no_grad():
    from_sample = vae.decode(posterior.sample(torch.Generator().manual_seed(0)))
print(f"largest pixel difference decode(sample) vs decode(mean): {(from_sample - reconstruction).abs().max():.4f}")

fig, axes = plt.subplots(1, 4, figsize=(13, 2.9), gridspec_kw={"width_ratios": [2.2, 1, 1, 1]})
axes[0].hist(torch.log10(sigma).flatten().numpy(), bins=60, color="C1")
axes[0].axvline(torch.log10(mu.std()).item(), color="k", ls="--", label="std of the means μ over all pictures")
axes[0].set(title="σ of q(z | x), every latent element", xlabel="log10 σ", ylabel="count")
axes[0].legend(fontsize=8)
show(axes[1], images[0], "picture")
for ax, values, title in ((axes[2], mu[0, 0], "μ, channel 0"), (axes[3], torch.log10(sigma[0, 0]), "log10 σ, channel 0")):
    im = ax.imshow(values.numpy(), cmap="viridis", interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046)
fig.tight_layout()
savefig(fig, "04-posterior.png")
plt.show()

# %% [markdown]
# ## The scaling factor
#
# The noise schedule of lesson 1 assumes the clean signal has roughly unit variance: at step t the noise has
# variance 1 − ᾱ_t against signal power ᾱ_t. Raw latents are not like that (Stable Diffusion's have a standard
# deviation of about 5.5), so after training the VAE one number is measured over many pictures and stored in
# the config, `scaling_factor = 1 / std(z)`. The pipeline multiplies every latent by it before diffusion and
# divides by it before decoding (`scale_latents`, `unscale_latents`). Below it is measured again on pictures
# the VAE never saw.

# %%
fresh, _, _ = sample_batch(1234, 32, size=128)
with torch.no_grad():
    z = vae.encode(fresh).sample(torch.Generator().manual_seed(1))  # (32, 4, 16, 16), unscaled
scaled = vae.scale_latents(z)
print(f"std of raw latents {z.std():.3f} -> 1 / std = {1 / z.std():.4f}; config scaling_factor {config.scaling_factor:.4f}")
print(f"std after scaling {scaled.std():.3f}, mean {scaled.mean():+.3f}")
for ch in range(4):
    print(f"  channel {ch}: mean {scaled[:, ch].mean():+.2f}, std {scaled[:, ch].std():.2f}")

# %% [markdown]
# One number for all channels: the channels keep different means and spreads, only the overall scale is set.
# What the scale does to the schedule: the *effective* signal-to-noise ratio of x_t = sqrt(ᾱ_t) z + sqrt(1 − ᾱ_t) ε
# is ᾱ_t · Var(z) / (1 − ᾱ_t). With unscaled latents every step of the schedule would be far less noisy than
# designed, and the last step, meant to be (almost) pure noise, would still show the picture.

# %%
schedule = NoiseSchedule.from_config(SchedulerConfig())  # Stable Diffusion's scaled_linear schedule
t = torch.arange(len(schedule.alphas_cumprod))
fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
grid = torch.linspace(-6, 6, 200)
axes[0].hist(z.flatten().numpy(), bins=80, density=True, alpha=0.5, label=f"raw latents (std {z.std():.2f})")
axes[0].hist(scaled.flatten().numpy(), bins=80, density=True, alpha=0.5, label=f"× scaling_factor (std {scaled.std():.2f})")
axes[0].plot(grid, torch.exp(-grid**2 / 2) / (2 * torch.pi) ** 0.5, "k", label="N(0, 1)")
axes[0].set(title="values of the latents (all channels)", xlim=(-6, 6))
axes[0].legend(fontsize=8)
for variance, label in ((scaled.var(), "scaled latents (variance ≈ 1)"), (z.var(), "raw latents of this VAE"),
                        (1 / 0.18215**2, "raw latents of Stable Diffusion's VAE (std 5.5)")):
    axes[1].plot(t, schedule.alphas_cumprod * variance / (1 - schedule.alphas_cumprod), label=label)
axes[1].set(title="effective SNR(t) = ᾱ_t Var(z) / (1 - ᾱ_t)", xlabel="t", yscale="log")
axes[1].legend(fontsize=8)
fig.tight_layout()
savefig(fig, "04-scaling.png")
plt.show()
print(f"SNR at t = 999: {schedule.snr[-1]:.4f} as designed, {schedule.snr[-1] * z.var():.4f} with raw latents here, "
      f"{schedule.snr[-1] / 0.18215**2:.3f} with Stable Diffusion's raw latents")

# %% [markdown]
# ## Decoding latents no picture made
#
# The decoder only ever saw latents of real pictures. Row 1 adds noise to the *pixels* with the forward process
# of lesson 1; row 2 adds it to the *scaled latent* (same schedule, same t) and decodes. Noise in latent space
# does not decode to grainy noise: it becomes blotches, stripes and colour shifts, textures of the decoder's
# own. By t = 999 the latent is practically pure noise, and so is the picture: no scene at all. This is what
# you would see if you decoded a sampler's intermediate latents during generation.

# %%
shown = [0, 100, 200, 400, 700, 999]
x0 = images[:1]  # (1, 3, 128, 128)
z0 = latents[:1]  # (1, 4, 16, 16), scaled
g = torch.Generator().manual_seed(2)
pixel_noise, latent_noise = torch.randn(x0.shape, generator=g), torch.randn(z0.shape, generator=g)
with torch.no_grad():
    noisy_latents = torch.cat([schedule.add_noise(z0, latent_noise, step) for step in shown])  # (6, 4, 16, 16)
    decoded = vae.decode(vae.unscale_latents(noisy_latents))  # (6, 3, 128, 128)
fig, axes = plt.subplots(2, len(shown), figsize=(1.5 * len(shown), 3.3))
for col, step in enumerate(shown):
    show(axes[0, col], schedule.add_noise(x0, pixel_noise, step)[0], f"t = {step}")
    show(axes[1, col], decoded[col])
axes[0, 0].set_ylabel("noised pixels", fontsize=8)
axes[1, 0].set_ylabel("noised latent,\ndecoded", fontsize=8)
fig.tight_layout(pad=0.2)
savefig(fig, "04-noisy-latents.png")
plt.show()

# %% [markdown]
# ## Walking between two latents
#
# Mix the latents of two pictures, z = (1 − w) z_a + w z_b, and decode (row 1); row 2 mixes the pixels instead.
# The decoder sees each latent position's 4 numbers and paints what they suggest. Where the pictures differ
# the mixed latent is a compromise that neither picture produced, so the decoder has to guess: the result is
# only roughly a cross-fade, with colours that are in neither of the two pictures. An autoencoder trained only for
# reconstruction does not organise its latent space so that straight lines mean anything; making new,
# coherent pictures is the diffusion model's job, not the VAE's.

# %%
weights = torch.linspace(0, 1, 6)
pair = images[[1, 4]]
with torch.no_grad():
    z_pair = vae.encode(pair).mean  # (2, 4, 16, 16), unscaled (mixing is the same either way)
    mixed = vae.decode(torch.stack([(1 - w) * z_pair[0] + w * z_pair[1] for w in weights]))  # (6, 3, 128, 128)
fig, axes = plt.subplots(2, len(weights), figsize=(1.5 * len(weights), 3.3))
for col, w in enumerate(weights):
    show(axes[0, col], mixed[col], f"w = {w:.1f}")
    show(axes[1, col], (1 - w) * pair[0] + w * pair[1])
axes[0, 0].set_ylabel("mixed latents,\ndecoded", fontsize=8)
axes[1, 0].set_ylabel("mixed pixels", fontsize=8)
fig.tight_layout(pad=0.2)
savefig(fig, "04-interpolation.png")
plt.show()

# %% [markdown]
# The VAE is trained first, on its own, and then frozen: `minidiff/train/vae.py` is its training stage
# (L1 reconstruction plus the small KL term, then the scaling factor measured). Lesson 5 turns to the other
# input of the diffusion model, the text.
