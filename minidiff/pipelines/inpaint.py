"""Inpainting: repaint the masked part of a picture (mask 1 = repaint, 0 = keep), and outpainting built on it.

Two kinds of U-Net, chosen by ``unet.config.in_channels``:

* 4 channels (any text-to-image model): after every step the known region is put back, noised to the level
  the next step expects, so only the masked region is really generated (latent blending, RePaint-style):

      x <- (1 - m) · add_noise(z_0, ε, next step) + m · x         m: the mask at latent size (nearest pixel)

* 9 channels (models trained for inpainting): the U-Net sees the mask and the masked picture's latents as
  extra input channels, [x (4), m (1), z(masked image) (4)], and fills in the hole itself.

``strength`` < 1 starts from the noised picture, as in image to image; 1 starts from pure noise.
Matches diffusers' ``StableDiffusionInpaintPipeline`` (both kinds) for the same seed and scheduler.
"""

import torch
import torch.nn.functional as F

from minidiff.images import as_image_tensor, as_mask_tensor
from minidiff.pipelines.base import PipelineBase, make_generator
from minidiff.pipelines.guidance import uses_classifier_free_guidance
from minidiff.noise import randn
from minidiff.samplers import make_sampler


class Inpaint(PipelineBase):
    @torch.no_grad()
    def inpaint(self, prompt, image, mask, strength=1.0, negative_prompt=None, steps=25, sampler="euler",
                karras=None, eta=0.0, guidance_scale=7.5, seed=None, generator=None, num_images_per_prompt=1,
                clip_skip=None, callback=None, return_trajectory=False, progress=True):
        """prompt, image (PIL or (1, 3, H, W) in [0, 1]), mask (PIL or (1, 1, H, W); >= 0.5 means repaint) ->
        PipelineResult with images (B, 3, H, W). The other arguments are those of ``text_to_image``."""
        image, mask = as_image_tensor(image), as_mask_tensor(mask)  # (1, 3, H, W), (1, 1, H, W) in {0, 1}
        if mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"the mask is {mask.shape[-1]}x{mask.shape[-2]} px but the image is {image.shape[-1]}x"
                f"{image.shape[-2]} px; give a mask of the image's size"
            )
        self.check_size(image.shape[-1], image.shape[-2])
        latent_channels, in_channels = self.vae.config.latent_channels, self.unet.config.in_channels
        if in_channels not in (latent_channels, 2 * latent_channels + 1):
            raise ValueError(f"inpainting needs a U-Net with {latent_channels} or {2 * latent_channels + 1} input "
                             f"channels, this one has {in_channels}")
        nine_channels = in_channels == 2 * latent_channels + 1
        context, batch = self.encode_prompt(prompt, negative_prompt, num_images_per_prompt, guidance_scale,
                                            clip_skip)
        generator, seed = make_generator(seed, generator, batch)
        sampler = make_sampler(sampler, self.scheduler_config, steps, karras=karras, eta=eta, strength=strength)
        h, w = image.shape[-2] // self.vae_scale_factor, image.shape[-1] // self.vae_scale_factor

        # The random draws come in diffusers' order: the picture's latents, the start noise, the masked picture's.
        # diffusers parity: with a list of generators, diffusers' inpainting encodes the one picture (and the
        # masked one) with the first generator only; the start noise and the sampler draw from each. It copies
        # the latents to the batch with `repeat` (contiguous, where the encoder gives channels-last), and the
        # U-Net's float16 roundings depend on that layout: so do we.
        first = generator[0] if isinstance(generator, (list, tuple)) else generator
        z0 = None
        if not nine_channels or strength < 1:
            z0 = self.encode_image(image, first).repeat(batch, 1, 1, 1)  # (B, 4, h, w)
        noise = self.noise((batch, latent_channels, h, w), generator)
        latents = noise * sampler.init_noise_sigma if strength == 1 else sampler.add_noise(z0, noise, 0)
        m = F.interpolate(mask, size=(h, w)).to(self.device, self.unet.dtype)  # (1, 1, h, w), nearest pixel
        m = m.expand(batch, -1, -1, -1)  # (B, 1, h, w)

        if nine_channels:
            masked_image = torch.where(mask >= 0.5, 0.5, image)  # the hole becomes mid-grey (0 in [-1, 1])
            masked_latents = self.encode_image(masked_image, first).repeat(batch, 1, 1, 1)  # (B, 4, h, w)
            extra = torch.cat([m, masked_latents], dim=1)  # (B, 5, h, w)
            if uses_classifier_free_guidance(self.unet, guidance_scale):
                extra = torch.cat([extra] * 2)  # one copy per half of the CFG batch
            model_fn, blend = self.guided_unet(context, guidance_scale, extra_channels=extra), None
        else:
            # diffusers encodes the masked picture here too and never uses it; drawing the same numbers keeps
            # seeds interchangeable with its pipeline
            randn((1, latent_channels, h, w), first, dtype=self.vae_dtype("encode"), device=self.device)
            model_fn = self.guided_unet(context, guidance_scale)
            last = len(sampler.timesteps) - 1

            def blend(i, x):
                known = z0 if i == last else sampler.add_noise(z0, noise, i + 1)  # the level before call i + 1
                return (1 - m) * known + m * x

        return self.run(sampler, model_fn, latents, generator, seed, blend=blend, callback=callback,
                        return_trajectory=return_trajectory, progress=progress)

    def outpaint(self, prompt, image, left=0, right=0, top=0, bottom=0, **options):
        """Extend a picture by left/right/top/bottom pixels and paint the new border (an inpainting of the border).

        The border starts as copies of the edge pixels (so the kept part's VAE latents see no hard edge), and the
        mask covers exactly the border. The new size must be a multiple of 8. ``options``: those of ``inpaint``.
        """
        image = as_image_tensor(image)  # (1, 3, H, W)
        pads = {"left": left, "right": right, "top": top, "bottom": bottom}
        if any(not isinstance(p, int) or p < 0 for p in pads.values()) or not any(pads.values()):
            raise ValueError(
                f"outpainting adds left, right, top and bottom pixels, whole numbers >= 0 and not all 0, but got "
                f"left {left}, right {right}, top {top} and bottom {bottom}; give the sides to extend"
            )
        H, W = image.shape[-2:]
        f = self.vae_scale_factor
        for name, size, a, b in (("width", W + left + right, "left", "right"),
                                 ("height", H + top + bottom, "top", "bottom")):
            if size % f:
                raise ValueError(
                    f"the outpainted {name} would be {size} px, not a multiple of {f}: add {f - size % f} (or remove "
                    f"{size % f}) pixels of {a} + {b} padding"
                )
        canvas = F.pad(image, (left, right, top, bottom), mode="replicate")  # (1, 3, H', W')
        mask = torch.ones(1, 1, *canvas.shape[-2:])
        mask[..., top : top + H, left : left + W] = 0  # keep the original picture
        return self.inpaint(prompt, canvas, mask, **options)
