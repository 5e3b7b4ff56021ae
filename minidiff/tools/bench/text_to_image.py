"""The whole guided text-to-image run the benchmark times, once in each library (tokenizing left out).

Both runs: context = text encoder([unconditional; conditional] ids); 50 (or ``steps``) Euler steps on
ε = ε_u + s (ε_c - ε_u) with s = 7.5; the latents unscaled by the VAE's scaling factor and decoded.
"""

import torch

from minidiff.pipelines.guidance import classifier_free_guidance
from minidiff.samplers import SchedulerConfig, make_sampler

GUIDANCE_SCALE = 7.5


def diffusers_text_to_image(text_encoder, unet, vae, ids, noise, steps):
    """The run the way diffusers' StableDiffusionPipeline does it, with its EulerDiscreteScheduler.
    ids: (2, 77); noise: (1, 4, h, w). Returns images (1, 3, 8h, 8w) in [-1, 1]."""
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    scheduler.set_timesteps(steps, device=noise.device)
    context = text_encoder(ids).last_hidden_state  # (2, 77, D)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(torch.cat([x] * 2), t)
        uncond, cond = unet(x_in, t, context).sample.chunk(2)
        x = scheduler.step(classifier_free_guidance(uncond, cond, GUIDANCE_SCALE), t, x).prev_sample
    return vae.decode(x / vae.config.scaling_factor).sample


def minidiff_text_to_image(text_encoder, guided_step, vae, ids, noise, steps):
    """The same run with minidiff's Euler sampler and a guided step such as ``minidiff.fast.GuidedStep`` (a
    CUDA graph) or ``PlainGuidedStep``. Same shapes as ``diffusers_text_to_image``."""
    sampler = make_sampler("euler", SchedulerConfig(), steps)
    guided_step.set_context(text_encoder(ids).last_hidden_state)
    x = sampler.sample(guided_step, noise * sampler.init_noise_sigma)
    return vae.decode(vae.unscale_latents(x))


class PlainGuidedStep:
    """The guided step without a graph (for the CPU): same interface as ``minidiff.fast.GuidedStep``.
    step(x, t) -> ε_u + s (ε_c - ε_u) for x (B, 4, h, w) and a (2B, 77, D) context."""

    def __init__(self, unet, context, guidance_scale):
        self.unet, self.context, self.guidance_scale = unet, context, guidance_scale

    def set_context(self, context):
        self.context = context

    def __call__(self, x, t):
        out = self.unet(torch.cat([x] * 2).to(self.unet.dtype), t, self.context)  # (2B, 4, h, w)
        return classifier_free_guidance(*out.chunk(2), self.guidance_scale)
