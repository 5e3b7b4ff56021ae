"""Stage 3: train the U-Net to predict the noise that was added to a latent (DDPM's epsilon objective).

With z_0 = scaling_factor * sample of q(z|x) from the frozen VAE, c = the frozen text encoder's hidden
states for the caption, t ~ U{0, ..., T-1} and eps ~ N(0, I):

    z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps
    L_UNet = E || eps - eps_theta(z_t, t, c) ||^2

A fraction ``caption_dropout`` of the captions is replaced by the empty prompt "", so the same network
also learns the unconditional prediction eps_theta(z_t, t, "") that classifier-free guidance needs.
Each image is used ``noise_draws`` times per step, with independent t and eps: encoding 128 x 128 images
costs more than the U-Net step itself, and fresh noise on a latent is nearly as informative as a fresh image.
The weights that are shipped are an exponential moving average of the trained ones.
"""

import dataclasses

import torch
import torch.nn.functional as F

from minidiff.models.unet import UNet2DConditionModel
from minidiff.train.clip import TokenCache
from minidiff.train.common import TrainConfig, fit, render


@dataclasses.dataclass
class UNetTrainConfig(TrainConfig):
    steps: int = 20000
    batch_size: int = 256
    lr: float = 3e-4
    warmup_steps: int = 500
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    noise_draws: int = 1  # (t, eps) pairs per image and step: batch_size images give batch_size * noise_draws examples


class LatentBatches:
    """What the diffusion stages train on, made fresh from each step's scenes with the frozen VAE and text encoder.

    ``__call__(scenes, generator, caption_dropout, repeats=1)`` -> images (N, 3, H, W), z_0 (N, 4, H/8, W/8)
    and the text states c (N, 77, D), with N = repeats * len(scenes) (each scene's entries repeated, the
    batch concatenated ``repeats`` times); each caption is swapped for "" with probability ``caption_dropout``.
    """

    def __init__(self, vae, text_encoder, tokenizer, config):
        self.vae = vae.to(config.device).eval().requires_grad_(False)
        self.text_encoder = text_encoder.to(config.device).eval().requires_grad_(False)
        self.tokens = TokenCache(tokenizer, torch.device(config.device))
        self.config = config

    @torch.no_grad()
    def __call__(self, scenes, generator, caption_dropout, repeats=1):
        images, captions = render(scenes, self.config, generator.device)  # (B, 3, H, W)
        z0 = self.vae.scale_latents(self.vae.encode(images).sample(generator=generator)).float()  # (B, 4, h, w)
        text = self.text_encoder(self.tokens(captions)).last_hidden_state.float()  # (B, 77, D)
        empty = self.text_encoder(self.tokens([""])).last_hidden_state.float()  # (1, 77, D)
        images, z0, text = images.repeat(repeats, 1, 1, 1), z0.repeat(repeats, 1, 1, 1), text.repeat(repeats, 1, 1)
        drop = torch.rand(len(z0), generator=generator, device=generator.device) < caption_dropout  # (N,)
        return images, z0, torch.where(drop[:, None, None], empty, text)


def add_noise(z0, schedule, generator):
    """Draw t ~ U{0..T-1} and eps ~ N(0, I); return (z_t, t, eps) with z_t = sqrt(abar_t) z0 + sqrt(1-abar_t) eps."""
    t = torch.randint(0, schedule.num_train_timesteps, (z0.shape[0],), generator=generator, device=z0.device)
    eps = torch.randn(z0.shape, generator=generator, device=z0.device)
    return schedule.add_noise(z0, eps, t), t, eps


def epsilon_loss(eps_pred, eps):
    """|| eps - eps_theta ||^2, averaged over every element."""
    return F.mse_loss(eps_pred.float(), eps)


def train_unet(unet_config, batches, schedule, config, out_dir, resume=True, time_limit=None):
    """Train a UNet2DConditionModel from scratch on ``batches`` (a LatentBatches); returns it with EMA weights.

    schedule: a ``minidiff.schedule.NoiseSchedule`` (Stable Diffusion's scaled_linear betas).
    """
    torch.manual_seed(config.seed)
    unet = UNet2DConditionModel(unet_config)

    def loss_fn(scenes, generator):
        _, z0, text = batches(scenes, generator, config.caption_dropout, config.noise_draws)
        z_t, t, eps = add_noise(z0, schedule, generator)
        return epsilon_loss(unet(z_t, t, encoder_hidden_states=text), eps)

    fit("unet", unet, loss_fn, config, out_dir, resume=resume, time_limit=time_limit)
    return unet
