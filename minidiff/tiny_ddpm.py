"""A tiny DDPM in pixel space, small enough to train on a laptop's CPU in minutes (lesson 2).

The pieces of lesson 2's notebook, which writes the training loop itself:

    simple_shapes   the data: one large circle, square or triangle, red or blue, somewhere on a white square
    TinyUNet        the network: minidiff's own ResNet blocks and timestep embedding in the smallest U-Net
    TinyDDPMConfig  the settings (the defaults: a minute or two on 2 CPU cores, rough shapes)
    scheduler_config(config)   the noise schedule, for training (NoiseSchedule) and for minidiff's samplers

Training is DDPM's (Ho et al., 2020): draw a clean image x_0, a timestep t and noise ε, and regress

    L = || target - f_θ(sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε, t) ||²,     target = ε, v or x_0 (prediction_type)
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from minidiff.data.shapes import Scene, SceneObject, render_scenes
from minidiff.models.embeddings import TimestepEmbedding
from minidiff.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from minidiff.samplers import SchedulerConfig


@dataclass
class TinyDDPMConfig:
    """Data, network and training settings.

    The defaults train in a minute or two on 2 CPU cores and give the right colours with rough shapes; for clean
    shapes use steps=1500 (several minutes). Lesson 2's notebook uses fewer steps still, to stay quick.
    """

    image_size: int = 16  # pixels per side
    colors: tuple = ("red", "blue")
    shapes: tuple = ("circle", "square", "triangle")
    channels: tuple = (32, 64)  # width of each level of the U-Net; each level after the first halves the size
    groups: int = 8  # GroupNorm groups
    beta_schedule: str = "squaredcos_cap_v2"  # the cosine schedule suits small images (lesson 1)
    prediction_type: str = "epsilon"
    steps: int = 400  # optimiser steps
    batch_size: int = 32
    lr: float = 2e-3
    ema_decay: float = 0.99  # the sampled weights are an exponential moving average of the trained ones
    seed: int = 0


def scheduler_config(config):
    """The SchedulerConfig of the model: its beta schedule and prediction type, trailing timesteps (so that
    sampling starts at t = 999, where training saw the noisiest images), x_0 predictions clipped to [-1, 1]."""
    return SchedulerConfig(beta_schedule=config.beta_schedule, prediction_type=config.prediction_type,
                           timestep_spacing="trailing", clip_sample=True)


def simple_shapes(rng, n, config):
    """n training images (n, 3, S, S) in [-1, 1]: one large shape of a random colour and kind, placed at random.

    rng: a numpy Generator. Uses the renderer of the captioned-shapes data set (minidiff.data.shapes).
    """
    scenes = []
    for _ in range(n):
        radius = float(rng.uniform(0.22, 0.26))  # as a fraction of the side
        margin = 1.2 * radius + 0.02  # every shape lies within 1.2 radii of its centre
        center = tuple(float(c) for c in rng.uniform(margin, 1 - margin, size=2))
        shape = SceneObject(config.shapes[rng.integers(len(config.shapes))],
                            config.colors[rng.integers(len(config.colors))], "large", center, radius)
        scenes.append(Scene([shape], "white", None, "", {}))
    return render_scenes(scenes, config.image_size) * 2 - 1


class TinyUNet(nn.Module):
    """The U-Net at its smallest: one ResNet block per level down, one in the middle, one per level up.

        x (B, 3, S, S) -> conv_in -> per level: ResNet block (keep a skip) -> downsample
                       -> middle ResNet block
                       -> per level, deepest first: upsample -> concatenate the skip -> ResNet block
                       -> GroupNorm, SiLU, conv_out -> (B, 3, S, S)

    Every ResNet block adds the embedding of the timestep t, which tells it how noisy its input is.
    x: (B, 3, S, S) with S divisible by 2^(levels - 1); t: (B,) or a single timestep.
    """

    def __init__(self, config):
        super().__init__()
        channels, groups = config.channels, config.groups
        temb = 4 * channels[0]
        self.time_embedding = TimestepEmbedding(channels[0], temb)
        self.conv_in = nn.Conv2d(3, channels[0], kernel_size=3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        previous = channels[0]
        for level, c in enumerate(channels):
            self.down.append(ResnetBlock2D(previous, c, temb, groups=groups))
            self.downsample.append(Downsample2D(c) if level < len(channels) - 1 else nn.Identity())
            previous = c
        self.mid = ResnetBlock2D(previous, previous, temb, groups=groups)
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for level in reversed(range(len(channels))):
            c = channels[level]
            self.upsample.append(Upsample2D(previous) if level < len(channels) - 1 else nn.Identity())
            self.up.append(ResnetBlock2D(previous + c, c, temb, groups=groups))  # input: features + skip
            previous = c
        self.norm_out = nn.GroupNorm(groups, previous)
        self.conv_out = nn.Conv2d(previous, 3, kernel_size=3, padding=1)

    def forward(self, x, t):
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        temb = self.time_embedding(t.float())  # (B, 4 C0)
        h = self.conv_in(x)  # (B, C0, S, S)
        skips = []
        for block, downsample in zip(self.down, self.downsample):
            h = block(h, temb)
            skips.append(h)
            h = downsample(h)  # (B, C, S/2, S/2) except after the deepest level
        h = self.mid(h, temb)
        for upsample, block in zip(self.upsample, self.up):
            h = upsample(h)
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 3, S, S)


def image_grid(images, columns):
    """(N, 3, S, S) in [-1, 1] -> (rows * S, columns * S, 3) numpy array in [0, 1], for plt.imshow."""
    n, _, s, _ = images.shape
    rows = -(-n // columns)
    padded = torch.ones(rows * columns, 3, s, s)
    padded[:n] = (images.clamp(-1, 1) + 1) / 2
    return padded.view(rows, columns, 3, s, s).permute(0, 3, 1, 4, 2).reshape(rows * s, columns * s, 3).numpy()


__all__ = ["TinyDDPMConfig", "TinyUNet", "image_grid", "scheduler_config", "simple_shapes"]
