"""Text to image: start from pure noise and let the guided U-Net denoise it towards the prompt.

    x_T = ε · init_noise_sigma,  ε ~ N(0, I) of shape (B, 4, H/8, W/8)
    for each t:  x <- sampler step(x, ε_u + s (ε_c - ε_u))          (classifier-free guidance, s = guidance_scale)
    image = VAE decoder(x_0 / scaling_factor)

Matches diffusers' ``StableDiffusionPipeline`` for the same seed and scheduler. A Latent Consistency Model (its
U-Net has ``time_cond_proj_dim``) takes the guidance scale as an input instead of a doubled batch (guidance.py);
with ``sampler="lcm"`` (4 to 8 steps) it matches diffusers' ``LatentConsistencyModelPipeline``.
"""

import torch

from minidiff.pipelines.base import PipelineBase, make_generator
from minidiff.samplers import make_sampler


class TextToImage(PipelineBase):
    @torch.no_grad()
    def text_to_image(self, prompt, negative_prompt=None, steps=25, sampler="euler", karras=None, eta=0.0,
                      guidance_scale=7.5, seed=None, generator=None, width=None, height=None,
                      num_images_per_prompt=1, clip_skip=None, callback=None, return_trajectory=False,
                      progress=True):
        """prompt (str or list of P str) -> PipelineResult with images (P * num_images_per_prompt, 3, H, W).

        seed, or generator: a torch.Generator, or a list of one per picture (each picture's numbers from its own);
        negative_prompt: the text to steer away from (default ""); sampler: one of ``SAMPLER_NAMES``; karras:
        Karras σ spacing (None: the model's ``use_karras_sigmas``, as in diffusers); eta: DDIM's noise;
        width/height: multiples of 8, default the U-Net's native size;
        clip_skip: condition on an earlier CLIP layer; callback(i, t, x, x0_pred) after each call may return a
        new x; return_trajectory: keep every step's latents and x_0 prediction; progress: show a progress bar.
        """
        self.check_plain_unet("text_to_image")
        native = self.unet.config.sample_size * self.vae_scale_factor
        width, height = width or native, height or native
        self.check_size(width, height)
        context, batch = self.encode_prompt(prompt, negative_prompt, num_images_per_prompt, guidance_scale,
                                            clip_skip)
        generator, seed = make_generator(seed, generator, batch)
        sampler = make_sampler(sampler, self.scheduler_config, steps, karras=karras, eta=eta)

        f = self.vae_scale_factor
        shape = (batch, self.vae.config.latent_channels, height // f, width // f)
        latents = self.noise(shape, generator) * sampler.init_noise_sigma  # (B, 4, h, w)
        model_fn = self.guided_unet(context, guidance_scale)
        return self.run(sampler, model_fn, latents, generator, seed, callback=callback,
                        return_trajectory=return_trajectory, progress=progress)
