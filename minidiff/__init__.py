"""minidiff: a small, readable Stable Diffusion that matches diffusers number for number.

The package mirrors the pipeline of a latent diffusion system:

    schedule  ->  samplers  ->  networks (text encoder, VAE, U-Net, ControlNet)  ->  pipelines  ->  command line

Each module explains one idea; the lessons in ``lessons/`` walk through them in order.
"""

__version__ = "0.1.0"
