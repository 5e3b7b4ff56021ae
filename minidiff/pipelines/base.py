"""What every Stable Diffusion pipeline shares: the networks, prompt encoding, the guided U-Net, the sampling
run and the VAE at both ends.

A pipeline is the same four stages whatever the task:

    prompts --tokenizer, text encoder--> context (2B, 77, D)
    start latents (B, 4, h, w): pure noise (text to image) or a noised picture (image to image, inpainting)
    sampler loop: x <- step(x, guided U-Net(x, t, context))                 h, w = H / 8, W / 8
    VAE decoder: latents / scaling_factor -> image (B, 3, H, W), mapped from [-1, 1] to [0, 1]

Each task (``text_to_image.py``, ``image_to_image.py``, ``inpaint.py``, ``controlnet.py``) is a subclass that
writes out its own version of these stages with the helpers below.

Random numbers: one ``torch.Generator`` (a CPU one made from ``seed``, unless you pass your own) draws every
random number of a run in the order diffusers draws them (VAE posterior samples, the start noise, the noise of
stochastic samplers), so a seed gives the same picture as diffusers' pipelines with
``generator=torch.Generator("cpu").manual_seed(seed)``; on the CPU the same seed and settings give bit-identical
images run after run. A list of generators, one per picture, draws each picture's numbers from its own
generator, as diffusers does (``minidiff.noise``).

Precision: the latents are in the U-Net's dtype (that of the text embeddings) from the start noise to the last
step, as in diffusers' pipelines: noise is drawn in that dtype, the picture's latents (img2img, inpainting) are
cast to it, and each sampler step returns what its arithmetic gives, as the matching diffusers scheduler does
(see "Precision" in ``minidiff/samplers/base.py``). So a float16 run takes diffusers' float16 steps; a float32
run is float32 throughout. The VAE runs in its own dtype unless the pipeline family follows ``force_upcast``
(``vae_dtype``); images come back as float32.
"""

import random
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from minidiff.images import tensor_to_pil
from minidiff.pipelines.guidance import classifier_free_guidance, guidance_condition, uses_classifier_free_guidance
from minidiff.pipelines.prompts import as_prompt_list, prompt_embeddings
from minidiff.noise import randn


@dataclass
class Trajectory:
    """What the sampler did, call by call (for lessons): the timestep t, the latent x after the call and the
    clean latent x_0 the network predicted at that call. Tensors are float32 on the CPU, (B, 4, h, w)."""

    start: torch.Tensor
    timesteps: list = field(default_factory=list)
    latents: list = field(default_factory=list)
    predicted_x0: list = field(default_factory=list)


@dataclass
class PipelineResult:
    """images: (B, 3, H, W) float32 in [0, 1] on the CPU, before rounding to 8 bits; latents: the final
    (B, 4, h, w) latents; seed: the seed of the run (None when a generator was passed in)."""

    images: torch.Tensor
    latents: torch.Tensor
    seed: int | None = None
    trajectory: Trajectory | None = None

    def to_pil(self):
        """The images as a list of B PIL images (8 bits per channel, round(x * 255))."""
        return tensor_to_pil(self.images)


def make_generator(seed=None, generator=None, batch=None):
    """(generator, seed): the given generator or list of generators (seed None), or a CPU generator seeded with
    ``seed`` (a random seed when none is given, reported so that the run can be repeated). A list must hold one
    generator per picture of the ``batch``."""
    if isinstance(generator, (list, tuple)) and batch is not None and len(generator) != batch:
        raise ValueError(
            f"got {len(generator)} generators for {batch} pictures; pass one generator per picture (prompts x "
            f"num_images_per_prompt), or a single generator"
        )
    if generator is not None:
        return generator, None
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    return torch.Generator("cpu").manual_seed(seed), seed


class PipelineBase:
    """The networks of a Stable Diffusion model and the stages every task shares. See the module docstring."""

    # diffusers parity: diffusers' SD 1.x/2.x pipelines run the VAE in its own dtype and never read
    # vae.config.force_upcast; its SDXL pipelines follow it (see ``vae_dtype``). A pipeline family sets this to
    # what its diffusers counterpart does.
    follows_force_upcast = False

    def __init__(self, tokenizer, text_encoder, vae, unet, scheduler_config, controlnet=None):
        self.tokenizer, self.text_encoder, self.vae, self.unet = tokenizer, text_encoder, vae, unet
        self.scheduler_config, self.controlnet = scheduler_config, controlnet
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)  # 8 for Stable Diffusion's VAE

    @classmethod
    def from_components(cls, components):
        """Build from ``minidiff.loading.load_components``' result."""
        return cls(components.tokenizer, components.text_encoder, components.vae, components.unet,
                   components.scheduler_config, components.controlnet)

    @classmethod
    def from_pretrained(cls, path, dtype=torch.float32, device="cpu", allow_pickle=False):
        """Load a diffusers model folder or a single checkpoint file (see ``minidiff.loading``)."""
        from minidiff.loading import load_components

        return cls.from_components(load_components(path, dtype=dtype, device=device, allow_pickle=allow_pickle))

    @property
    def device(self):
        return self.unet.conv_in.weight.device

    def check_size(self, width, height):
        """Raise a ValueError unless width and height (pixels) are positive multiples of the VAE's factor 8."""
        f = self.vae_scale_factor
        for name, size in (("width", width), ("height", height)):
            if not isinstance(size, int):
                raise TypeError(f"{name} must be an integer number of pixels, got {size!r}")
            if size <= 0 or size % f:
                below = size // f * f
                hint = (f"the nearest valid {name}s are {below} or {below + f}" if below >= f
                        else f"the smallest valid {name} is {f}")
                raise ValueError(f"{name} must be a positive multiple of {f} pixels, got {size}; {hint}")

    def check_plain_unet(self, task):
        """Raise unless the U-Net reads plain latents (an inpainting U-Net also wants a mask and a masked image)."""
        if self.unet.config.in_channels != self.vae.config.latent_channels:
            raise ValueError(
                f"{task} needs a U-Net with {self.vae.config.latent_channels} input channels; this one has "
                f"{self.unet.config.in_channels} (an inpainting model): use inpaint or outpaint with it"
            )

    def encode_prompt(self, prompt, negative_prompt, num_images_per_prompt, guidance_scale, clip_skip):
        """-> (context, B): context (2B, 77, D) [unconditional; conditional] when guidance_scale > 1 (and the U-Net
        is not an LCM's: guidance.py), else (B, 77, D), in the U-Net's dtype; B = prompts x num_images_per_prompt."""
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be a positive integer, got {num_images_per_prompt!r}")
        if negative_prompt is not None and self.unet.config.time_cond_proj_dim is not None:
            raise ValueError("this U-Net is a Latent Consistency Model's (time_cond_proj_dim is set): its guidance is "
                             "built in and takes no negative prompt; leave negative_prompt out")
        context = prompt_embeddings(self.tokenizer, self.text_encoder, prompt, negative_prompt, num_images_per_prompt,
                                    uses_classifier_free_guidance(self.unet, guidance_scale), clip_skip)
        return context.to(self.device, self.unet.dtype), len(as_prompt_list(prompt)) * num_images_per_prompt

    def vae_dtype(self, stage):
        """The dtype the VAE runs in to "encode" or "decode": its own, or, in a pipeline family that follows
        ``force_upcast`` (diffusers' SDXL pipelines) and a VAE whose config sets it, float32 to encode and float32
        to decode a float16 VAE (a bfloat16 one decodes in bfloat16, as there)."""
        vae = self.vae
        upcast = stage == "encode" or vae.dtype == torch.float16
        return torch.float32 if self.follows_force_upcast and vae.config.force_upcast and upcast else vae.dtype

    def noise(self, shape, generator):
        """Standard normal noise of ``shape`` in the U-Net's dtype, the dtype of the latents (as in diffusers)."""
        return randn(shape, generator, dtype=self.unet.dtype, device=self.device)

    def encode_image(self, image, generator):
        """image (1, 3, H, W) in [0, 1] -> samples of q(z | x), scaled for the U-Net, in its dtype: (1, 4, H/8, W/8)
        from one generator; (n, 4, H/8, W/8) from a list of n, one sample from each (as diffusers' img2img draws)."""
        # diffusers parity: the picture keeps its memory layout (channels-last for a PIL picture, see
        # pil_to_tensor; a caller's tensor as it came), as in diffusers, for the VAE's kernels round by layout
        image = (image * 2 - 1).to(self.device, self.vae_dtype("encode"))
        with self.vae.cast(image.dtype) as vae:
            posterior = vae.encode(image)
            if isinstance(generator, (list, tuple)):
                z = torch.cat([posterior.sample(g) for g in generator])
            else:
                z = posterior.sample(generator)
        return self.vae.scale_latents(z.to(self.unet.dtype))

    def decode(self, latents):
        """Scaled latents (B, 4, h, w) -> images (B, 3, 8h, 8w) in [0, 1], float32 on the CPU."""
        z = self.vae.unscale_latents(latents.to(self.device))
        image = self.vae.decode_safely(z, dtype=self.vae_dtype("decode"))
        return (image.float() / 2 + 0.5).clamp(0, 1).cpu()

    def guided_unet(self, context, guidance_scale, extra_channels=None, control=None):
        """model_fn(x_in, t) for a sampler: the U-Net with classifier-free guidance, ε = ε_u + s (ε_c - ε_u).

        x_in (B, 4, h, w) is doubled to (2B, 4, h, w) to meet the [unconditional; conditional] context; an LCM's
        U-Net instead runs once on (B, 4, h, w) with the scale embedded as its timestep_cond (guidance.py).
        extra_channels (2B, C', h, w): concatenated after the latents (an inpainting U-Net's mask and masked image).
        control(x, t) -> (down residuals, mid residual) or (None, None): a ControlNet's additions to the skips.
        """
        guided = uses_classifier_free_guidance(self.unet, guidance_scale)
        condition = guidance_condition(self.unet, guidance_scale, context.shape[0])  # (B, D) or None

        def model_fn(x_in, t):
            x = (torch.cat([x_in] * 2) if guided else x_in).to(self.unet.dtype)  # (2B, 4, h, w)
            down, mid = control(x, t) if control is not None else (None, None)
            if extra_channels is not None:
                x = torch.cat([x, extra_channels], dim=1)  # (2B, 4 + C', h, w)
            out = self.unet(x, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid,
                            timestep_cond=condition)
            if not guided:
                return out
            uncond, cond = out.chunk(2)  # (B, 4, h, w) each, in the U-Net's dtype
            return classifier_free_guidance(uncond, cond, guidance_scale)

        return model_fn

    def run(self, sampler, model_fn, latents, generator, seed=None, blend=None, callback=None,
            return_trajectory=False, progress=True):
        """Sample from ``latents`` (B, 4, h, w), then decode. -> PipelineResult.

        After each network call i: blend(i, x) -> x (inpainting keeps the known region), a check that x is
        finite, the trajectory record, then callback(i, t, x, x0_pred), which may return a replacement x.
        """
        n_calls = len(sampler.timesteps)
        trajectory = Trajectory(latents.float().cpu()) if return_trajectory else None
        bar = tqdm(total=n_calls, desc=f"{sampler.name} sampling", unit="step", disable=not progress, leave=False)

        def on_step(i, t, x, x0):
            if blend is not None:
                x = blend(i, x)
            if not torch.isfinite(x).all():
                raise FloatingPointError(
                    f"the latents became NaN or infinite at step {i + 1} of {n_calls} (timestep {float(t):g}); "
                    f"in float16 the networks can overflow: try float32, a lower guidance scale, or check the weights"
                )
            if trajectory is not None:
                trajectory.timesteps.append(float(t))
                trajectory.latents.append(x.float().cpu())
                trajectory.predicted_x0.append(x0.float().cpu())
            bar.update()
            if callback is not None:
                replaced = callback(i, t, x, x0)
                x = x if replaced is None else replaced
            return x

        with bar:
            latents = sampler.sample(model_fn, latents.to(self.device), generator=generator, callback=on_step)
        return PipelineResult(self.decode(latents), latents.float().cpu(), seed, trajectory)
