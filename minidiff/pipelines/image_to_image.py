"""Image to image (SDEdit, Meng et al. 2022): noise a picture part of the way, then denoise it with a prompt.

With ``strength`` s in (0, 1], only the last int(steps · s) steps run. The start is the picture's latent noised
to the level of the first of them:

    z_0 ~ q(z | image) · scaling_factor          (a sample of the VAE posterior, as diffusers draws it)
    x = add_noise(z_0, ε, first step)             s = 1: (almost) pure noise;  s -> 0: the picture itself

Low strength keeps the composition and colours; high strength keeps little but the rough layout.
Matches diffusers' ``StableDiffusionImg2ImgPipeline`` for the same seed and scheduler.
"""

import torch

from minidiff.images import as_image_tensor
from minidiff.pipelines.base import PipelineBase, make_generator
from minidiff.samplers import make_sampler


class ImageToImage(PipelineBase):
    @torch.no_grad()
    def image_to_image(self, prompt, image, strength=0.75, negative_prompt=None, steps=25, sampler="euler",
                       karras=None, eta=0.0, guidance_scale=7.5, seed=None, generator=None,
                       num_images_per_prompt=1, clip_skip=None, callback=None, return_trajectory=False,
                       progress=True):
        """prompt, image (PIL, or tensor (3, H, W) / (1, 3, H, W) in [0, 1]; H and W multiples of 8) ->
        PipelineResult with images (B, 3, H, W). The other arguments are those of ``text_to_image``."""
        self.check_plain_unet("image_to_image")
        image = as_image_tensor(image)  # (1, 3, H, W)
        self.check_size(image.shape[-1], image.shape[-2])
        context, batch = self.encode_prompt(prompt, negative_prompt, num_images_per_prompt, guidance_scale,
                                            clip_skip)
        generator, seed = make_generator(seed, generator, batch)
        sampler = make_sampler(sampler, self.scheduler_config, steps, karras=karras, eta=eta, strength=strength)

        z0 = self.encode_image(image, generator).expand(batch, -1, -1, -1)  # (B, 4, h, w): one sample or one each
        noise = self.noise(z0.shape, generator)
        latents = sampler.add_noise(z0, noise, 0)
        model_fn = self.guided_unet(context, guidance_scale)
        return self.run(sampler, model_fn, latents, generator, seed, callback=callback,
                        return_trajectory=return_trajectory, progress=progress)
