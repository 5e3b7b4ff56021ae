"""Stage 2: train a small CLIP, so the text encoder's features describe what the pictures show.

A text tower f (Stable Diffusion's CLIP text transformer) and an image tower g (a small convnet) map a
batch of N captions and N images to unit vectors t_i = P_t f(c_i) / |.| and v_j = P_v g(x_j) / |.|.
With logits s_ij = exp(tau) * <v_i, t_j>, the symmetric InfoNCE loss is

    L_CLIP = 1/2 [ CE(s, Y) + CE(s^T, Y^T) ],   Y_ij = [c_i == c_j] / #{k : c_k == c_i}

i.e. each image must pick its caption among the batch's captions, and each caption its image. The
targets Y are usually the identity; when a caption occurs twice in a batch, both of its images count as
right. Only the text tower goes into the Stable Diffusion model (frozen); the image tower and the two
projections are kept for the CLIP score of ``minidiff evaluate``.

With ``hard_negatives`` each image also meets a caption that is *almost* its own: the same words with two
colours or two shapes swapped, or the relation turned around (``captions.contradict``). These N extra
captions join the image -> text side only (they have no image of their own):

    L = 1/2 [ CE(s_aug, Y_aug) + CE(s^T, Y^T) ],   s_aug = [s | exp(tau) <v_i, t'_j>]  (N, 2N)

Random captions in a batch can be told apart by which words they contain; "a red circle above a blue
square" and "a blue circle above a red square" only by how the words are bound together. Without such
pairs a contrastive text encoder learns a bag of words (Yuksekgonul et al., 2023, "When and why
vision-language models behave like bags-of-words"), and a U-Net conditioned on it mixes up which colour
belongs to which shape.
"""

import dataclasses
import json
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from minidiff.data.captions import contradict, make_caption
from minidiff.data.shapes import numpy_generator
from minidiff.loading.safetensors_file import read_safetensors
from minidiff.models.clip import CLIPTextModel
from minidiff.train.common import TrainConfig, fit, render


@dataclasses.dataclass
class CLIPTrainConfig(TrainConfig):
    steps: int = 4000
    batch_size: int = 512
    lr: float = 5e-4
    warmup_steps: int = 200
    weight_decay: float = 0.1
    hard_negatives: bool = False  # add a contradicting caption per image (see the module docstring)


@dataclasses.dataclass
class ImageTowerConfig:
    """A convnet: stride-2 convolutions from 128x128 down to 4x4, then flatten (keeps position) and project."""

    image_size: int = 128
    channels: tuple = (32, 64, 128, 256, 256)
    embed_dim: int = 256

    @classmethod
    def from_dict(cls, d):
        return cls(**{**d, "channels": tuple(d["channels"])})

    def to_dict(self):
        return dataclasses.asdict(self)


class ImageTower(nn.Module):
    """x (B, 3, S, S) in [-1, 1] -> image embedding (B, embed_dim), not normalised.

    Each stage: conv 3x3 stride 2 -> GroupNorm -> SiLU -> conv 3x3 -> GroupNorm -> SiLU. The final 4x4 map
    is flattened rather than averaged so that "above" and "left of" stay visible.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        layers, c_in = [], 3
        for c in config.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(8, c), nn.SiLU()]
            c_in = c
        self.convs = nn.Sequential(*layers)
        side = config.image_size // 2 ** len(config.channels)
        self.proj = nn.Linear(c_in * side * side, config.embed_dim)

    def forward(self, x):
        return self.proj(self.convs(x).flatten(1))  # (B, C, s, s) -> (B, C*s*s) -> (B, embed_dim)


class CLIP(nn.Module):
    """The two towers with their projections to a shared space and the learned temperature tau.

    ``text_projection`` is bias-free, as in CLIP, so it loads into a CLIPTextModelWithProjection.
    """

    def __init__(self, text_config, image_config, projection_dim=256):
        super().__init__()
        self.text_model = CLIPTextModel(text_config)
        self.vision_model = ImageTower(image_config)
        self.text_projection = nn.Linear(text_config.hidden_size, projection_dim, bias=False)
        self.visual_projection = nn.Linear(image_config.embed_dim, projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def embed_text(self, input_ids):
        """input_ids (B, 77) -> unit vectors (B, projection_dim), from the pooled (end-of-text) token."""
        pooled = self.text_model(input_ids).pooler_output  # (B, hidden)
        return F.normalize(self.text_projection(pooled), dim=-1)

    def embed_images(self, images):
        """images (B, 3, S, S) in [-1, 1] -> unit vectors (B, projection_dim)."""
        return F.normalize(self.visual_projection(self.vision_model(images)), dim=-1)


def load_clip_folder(folder, text_encoder):
    """The CLIP saved beside a model in ``folder/clip/`` (written by ``minidiff.train.bundled.export``), in float32.

    That folder holds the image tower, both projections and the temperature; the text tower is the model's own
    ``text_encoder`` (its weights are copied in). Every key must be there (strict loading).
    """
    with open(os.path.join(folder, "clip", "config.json")) as f:
        config = json.load(f)
    clip = CLIP(text_encoder.config, ImageTowerConfig.from_dict(config["image_tower"]), config["projection_dim"])
    tower = read_safetensors(os.path.join(folder, "clip", "model.safetensors"))  # image tower, projections, tau
    text = {f"text_model.{k}": v for k, v in text_encoder.state_dict().items()}
    clip.load_state_dict({**text, **tower})  # values are copied into the float32 parameters
    return clip.eval()


def clip_loss(model, images, input_ids, negative_ids=None):
    """Symmetric InfoNCE over the batch; identical captions share the target mass. Returns a scalar.

    images (N, 3, S, S), input_ids (N, 77): each image's caption. negative_ids (M, 77), optional: extra
    captions that compete on the image -> text side only (hard negatives; one that happens to equal an
    image's caption counts as right for that image).
    """
    n = len(input_ids)
    texts = input_ids if negative_ids is None else torch.cat([input_ids, negative_ids])  # (N + M, 77)
    v = model.embed_images(images)  # (N, D)
    t = model.embed_text(texts)  # (N + M, D)
    with torch.autocast(v.device.type, enabled=False):  # logits up to 100: bfloat16 would round them to ~0.5
        logits = model.logit_scale.exp().clamp(max=100) * v.float() @ t.float().T  # (N, N + M): image i vs text j
    same = (input_ids[:, None, :] == texts[None, :, :]).all(-1).float()  # (N, N + M): caption i == text j
    image_to_text = F.cross_entropy(logits, same / same.sum(1, keepdim=True))
    text_to_image = F.cross_entropy(logits[:, :n].T, same[:, :n] / same[:, :n].sum(1, keepdim=True))
    return 0.5 * (image_to_text + text_to_image)


def contradicting_captions(scenes, rng):
    """One hard-negative caption per scene: its attributes with one bound detail changed (``contradict``)."""
    return [make_caption(contradict(scene.attributes, rng), rng) for scene in scenes]


class TokenCache:
    """Tokenise captions once: the caption grammar is small, so most captions repeat.

    ``__call__(captions) -> input_ids (B, 77)`` on ``device``.
    """

    def __init__(self, tokenizer, device):
        self.tokenizer, self.device, self.ids = tokenizer, device, {}

    def __call__(self, captions):
        for c in captions:
            if c not in self.ids:
                self.ids[c] = self.tokenizer(c).input_ids[0]  # (77,)
        return torch.stack([self.ids[c] for c in captions]).to(self.device)


def train_clip(text_config, image_config, tokenizer, config, out_dir, projection_dim=256, resume=True,
               time_limit=None):
    """Train both towers from scratch with ``clip_loss``; returns the CLIP module."""
    torch.manual_seed(config.seed)
    model = CLIP(text_config, image_config, projection_dim)
    device = torch.device(config.device)
    tokens = TokenCache(tokenizer, device)

    def loss_fn(scenes, generator):
        images, captions = render(scenes, config, device)
        negatives = None
        if config.hard_negatives:  # worded from a NumPy generator seeded by the step's torch generator
            negatives = tokens(contradicting_captions(scenes, numpy_generator(generator)))
        return clip_loss(model, images, tokens(captions), negatives)

    fit("clip", model, loss_fn, config, out_dir, resume=resume, time_limit=time_limit)
    return model
