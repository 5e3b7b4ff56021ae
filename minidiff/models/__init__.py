"""The four networks of Stable Diffusion (clip, vae, unet, controlnet), with diffusers' module and parameter names;
their configs in config.py; the blocks they share in attention, resnet, transformer, embeddings and activations."""
