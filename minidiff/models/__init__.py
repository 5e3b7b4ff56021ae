"""The four networks of Stable Diffusion, with diffusers' module and parameter names."""
