"""Stage 4: train a ControlNet that steers the frozen U-Net with the edge map of the target picture.

The ControlNet starts as a copy of the U-Net's encoder whose outputs pass through zero-initialised
convolutions, so at step 0 it adds exactly nothing. With e = canny(x) (in [0, 1], 3 channels) and the
residuals r = ControlNet(z_t, t, c, e), the objective is the U-Net's, with only the ControlNet trained:

    L_Control = E || eps - eps_theta(z_t, t, c; r) ||^2

Half of the captions are dropped (as in the ControlNet paper), which forces the network to read the
picture's layout from the edges rather than from the words.
"""

import dataclasses

import torch

from minidiff.canny import canny
from minidiff.models.controlnet import ControlNetModel
from minidiff.train.common import TrainConfig, fit
from minidiff.train.unet import add_noise, epsilon_loss


@dataclasses.dataclass
class ControlNetTrainConfig(TrainConfig):
    steps: int = 6000
    batch_size: int = 256
    lr: float = 1e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    caption_dropout: float = 0.5
    noise_draws: int = 1  # (t, eps) pairs per image and step, as in UNetTrainConfig
    low_threshold: float = 100  # Canny thresholds on the 0-255 scale, as cv2.Canny(image, 100, 200)
    high_threshold: float = 200


def edge_condition(images, low_threshold=100, high_threshold=200):
    """images (B, 3, H, W) in [-1, 1] -> Canny edges as a (B, 3, H, W) picture in [0, 1] (white edges on black)."""
    edges = canny((images + 1) / 2, low_threshold, high_threshold)  # (B, 1, H, W) uint8, 0 or 255
    return (edges.float() / 255).expand(-1, 3, -1, -1)


def controlnet_loss(controlnet, unet, z_t, t, text, condition, eps):
    """eps-prediction MSE of the frozen U-Net driven by the ControlNet's residuals."""
    down, mid = controlnet(z_t, t, encoder_hidden_states=text, controlnet_cond=condition)
    eps_pred = unet(z_t, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid)
    return epsilon_loss(eps_pred, eps)


def train_controlnet(unet, batches, schedule, config, out_dir, resume=True, time_limit=None):
    """Train ControlNetModel.from_unet(unet) with the U-Net frozen; returns the ControlNet with EMA weights."""
    torch.manual_seed(config.seed)
    controlnet = ControlNetModel.from_unet(unet)
    unet.to(config.device).eval().requires_grad_(False)

    def loss_fn(scenes, generator):
        images, z0, text = batches(scenes, generator, config.caption_dropout, config.noise_draws)
        z_t, t, eps = add_noise(z0, schedule, generator)
        condition = edge_condition(images, config.low_threshold, config.high_threshold)  # (B, 3, H, W)
        return controlnet_loss(controlnet, unet, z_t, t, text, condition, eps)

    fit("controlnet", controlnet, loss_fn, config, out_dir, resume=resume, time_limit=time_limit)
    return controlnet
