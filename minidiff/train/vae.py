"""Stage 1: train the autoencoder that maps 128x128 images to 16x16x4 latents and back.

The encoder gives a diagonal Gaussian q(z|x) = N(mu(x), sigma(x)^2); the decoder maps a sample back:

    L_VAE = E_{z ~ q(z|x)} |x - D(z)|_1  +  beta * KL( q(z|x) || N(0, I) )

with |.|_1 averaged over pixels and the KL averaged over latent elements. beta is small (1e-6 by
default): the KL term only keeps the latents from drifting to huge values, it does not make them
Gaussian. After training, ``scaling_factor = 1 / std(z)`` is measured so that the diffusion model sees
latents of unit variance.

With ``train_encoder=False`` only the decoder learns (the |x - D(z)|_1 term; the encoder is frozen). The
latent space then stays exactly as it was, so a U-Net already trained on it needs no retraining: this is
how Stable Diffusion's improved VAE decoders (ft-EMA, ft-MSE) were made, and how the bundled model's
decoder was trained further after its U-Net.
"""

import dataclasses

import torch

from minidiff.models.vae import AutoencoderKL
from minidiff.train.common import TrainConfig, draw_scenes, fit, render


@dataclasses.dataclass
class VAETrainConfig(TrainConfig):
    steps: int = 6000
    batch_size: int = 64
    lr: float = 4e-4
    warmup_steps: int = 200
    kl_weight: float = 1e-6
    train_encoder: bool = True  # False: fine-tune the decoder alone, keeping the latent space (and scaling_factor)


def vae_loss(vae, images, kl_weight, generator, train_encoder=True):
    """L1 reconstruction + kl_weight * KL, for images (B, 3, H, W) in [-1, 1]. Returns a scalar.

    train_encoder=False: the encoder runs without gradients and the loss is the reconstruction term alone.
    """
    with torch.set_grad_enabled(train_encoder and torch.is_grad_enabled()):
        posterior = vae.encode(images)  # mean and log-variance of q(z|x), (B, 4, H/8, W/8) each
        z = posterior.sample(generator=generator)
    reconstruction = vae.decode(z)  # (B, 3, H, W)
    l1 = (images - reconstruction.float()).abs().mean()
    return l1 + kl_weight * posterior.kl().mean() / z[0].numel() if train_encoder else l1


@torch.no_grad()
def measure_scaling_factor(vae, config, batches=8):
    """1 / std of sampled latents over a few fresh batches: the factor that gives the U-Net unit-variance inputs."""
    device = torch.device(config.device)
    latents = []
    for i in range(batches):
        generator = torch.Generator(device=device).manual_seed(i)
        images, _ = render(draw_scenes(config.seed + 1, i, config.batch_size), config, device)  # unseen scenes
        latents.append(vae.encode(images).sample(generator=generator).float())
    return 1.0 / torch.cat(latents).std().item()


def train_vae(vae_config, config, out_dir, resume=True, time_limit=None):
    """Train an AutoencoderKL from scratch; returns it with EMA weights and a measured scaling_factor.

    With ``config.train_encoder=False`` (fine-tuning the decoder of a checkpoint in ``out_dir``) the encoder's
    weights and ``vae_config.scaling_factor`` are kept as they are.
    """
    torch.manual_seed(config.seed)
    vae = AutoencoderKL(vae_config)
    device = torch.device(config.device)
    parameters = None  # everything
    if not config.train_encoder:
        parameters = [*vae.decoder.parameters(), *(vae.post_quant_conv.parameters() if vae.post_quant_conv else ())]

    def loss_fn(scenes, generator):
        images, _ = render(scenes, config, device)  # (B, 3, H, W)
        return vae_loss(vae, images, config.kl_weight, generator, config.train_encoder)

    fit("vae", vae, loss_fn, config, out_dir, parameters=parameters, resume=resume, time_limit=time_limit)
    if config.train_encoder:
        vae.config.scaling_factor = measure_scaling_factor(vae, config)
    return vae
