"""Pipelines: the networks and a sampler joined into whole tasks.

    from minidiff.pipelines import StableDiffusion
    sd = StableDiffusion.from_pretrained("weights")            # a diffusers folder or a single checkpoint file
    result = sd.text_to_image("a red circle left of a blue square", steps=25, seed=0)
    result.to_pil()[0].save("out.png")

    task                                   module              diffusers counterpart
    text_to_image(prompt, ...)             text_to_image.py    StableDiffusionPipeline
    image_to_image(prompt, image, ...)     image_to_image.py   StableDiffusionImg2ImgPipeline
    inpaint(prompt, image, mask, ...)      inpaint.py          StableDiffusionInpaintPipeline (4- or 9-channel U-Net)
    outpaint(prompt, image, left=..., ...) inpaint.py          (an inpainting of a padded canvas)
    control(prompt, control_image, ...)    controlnet.py       StableDiffusionControlNetPipeline

Every task returns a ``PipelineResult``: ``images`` (B, 3, H, W) in [0, 1], ``to_pil()``, the final latents, the
seed, and with ``return_trajectory=True`` each step's latents and predicted x_0. ``prompts.py`` turns prompts into
the guidance batch; ``base.py`` holds what the tasks share.
"""

from minidiff.pipelines.base import PipelineResult, Trajectory, make_generator
from minidiff.pipelines.controlnet import ControlNetGuidance
from minidiff.pipelines.image_to_image import ImageToImage
from minidiff.pipelines.inpaint import Inpaint
from minidiff.pipelines.text_to_image import TextToImage


class StableDiffusion(TextToImage, ImageToImage, Inpaint, ControlNetGuidance):
    """A Stable Diffusion model (tokenizer, text encoder, VAE, U-Net, sampler settings, optional ControlNet) with
    every task as a method. Build it with ``from_pretrained(path)``, ``from_components(components)`` or
    ``StableDiffusion(tokenizer, text_encoder, vae, unet, scheduler_config, controlnet=None)``."""


__all__ = ["PipelineResult", "StableDiffusion", "Trajectory", "make_generator"]
