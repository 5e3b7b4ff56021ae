"""ControlNet guidance (Zhang et al., 2023): text to image whose layout follows a condition picture (edges, ...).

At every step the ControlNet reads the latents, the prompt and the condition picture and returns one residual per
U-Net skip connection plus one for the mid block; the U-Net adds them to its own:

    (r_down, r_mid) = ControlNet(x, t, c, condition) · controlnet_scale
    ε = U-Net(x, t, c; skips + r_down, mid + r_mid)                         then guidance as usual

The ControlNet acts only on the calls i (of n) with guidance_start <= i / n and (i + 1) / n <= guidance_end; a
late start leaves the composition free, an early end leaves the details free.
Matches diffusers' ``StableDiffusionControlNetPipeline`` (guess mode off) for the same seed and scheduler.
"""

import itertools

import torch

from minidiff.images import as_image_tensor
from minidiff.pipelines.base import PipelineBase, make_generator
from minidiff.samplers import make_sampler


class ControlNetGuidance(PipelineBase):
    @torch.no_grad()
    def control(self, prompt, control_image, controlnet_scale=1.0, guidance_start=0.0, guidance_end=1.0,
                negative_prompt=None, steps=25, sampler="euler", karras=None, eta=0.0, guidance_scale=7.5,
                seed=None, generator=None, num_images_per_prompt=1, clip_skip=None, callback=None,
                return_trajectory=False, progress=True):
        """prompt, control_image (PIL, or (1, 3, H, W) / (1, 1, H, W) in [0, 1], e.g. white edges on black) ->
        PipelineResult with images (B, 3, H, W) of the condition's size. Other arguments: see ``text_to_image``."""
        if self.controlnet is None:
            raise ValueError("this model has no ControlNet: load a model folder with a controlnet/ subfolder")
        self.check_plain_unet("control")
        if not 0 <= guidance_start < guidance_end <= 1:
            raise ValueError(f"need 0 <= guidance_start < guidance_end <= 1, got {guidance_start} and {guidance_end}")
        condition = as_image_tensor(control_image, channels=self.controlnet.config.conditioning_channels)
        height, width = condition.shape[-2:]
        self.check_size(width, height)
        context, batch = self.encode_prompt(prompt, negative_prompt, num_images_per_prompt, guidance_scale,
                                            clip_skip)
        generator, seed = make_generator(seed, generator, batch)
        sampler = make_sampler(sampler, self.scheduler_config, steps, karras=karras, eta=eta)

        f = self.vae_scale_factor
        latents = self.noise((batch, self.vae.config.latent_channels, height // f, width // f), generator)
        latents = latents * sampler.init_noise_sigma  # (B, 4, h, w)
        condition = condition.to(self.device, self.controlnet.dtype).expand(len(context), -1, -1, -1)  # (2B, 3, H, W)
        n_calls, call = len(sampler.timesteps), itertools.count()

        def control(x, t):
            i = next(call)
            if i / n_calls < guidance_start or (i + 1) / n_calls > guidance_end:
                return None, None
            return self.controlnet(x, t, context, condition, conditioning_scale=controlnet_scale)

        model_fn = self.guided_unet(context, guidance_scale, control=control)
        return self.run(sampler, model_fn, latents, generator, seed, callback=callback,
                        return_trajectory=return_trajectory, progress=progress)
