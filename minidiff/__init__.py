"""minidiff: a small, readable Stable Diffusion that matches diffusers number for number.

The package mirrors the pipeline of a latent diffusion system. The learner's path, each floor importing only the
floors below it:

    atomic.py                 files and folders written whole or not at all (renamed into place once complete)
    sampler_names.py          the names samplers go by in minidiff, A1111 and ComfyUI (no imports: the CLI reads it)
    noise.py, schedule.py     random numbers drawn as diffusers draws them; the forward process q(x_t | x_0)
    brownian.py               Brownian-tree noise (DPM++ SDE), the same numbers as torchsde for the same seed
    samplers/                 where to step (steps.py, spacings.py), what all share (base.py, config.py), how: one
                              file each
    models/                   shared blocks (attention, resnet, embeddings, transformer, activations), one file
                              per network (clip, tokenizer, vae, unet, controlnet), their configs in config.py
    loading/                  one reader per file format, one rename table per foreign key layout
    pipelines/                what every task shares (base.py, guidance.py, prompts.py), one file per task

Beside it, never imported by it: data/ and train/ (the bundled model), fast.py (the GPU fast path), commands/ and
cli.py (the command line). On top: tools/ (verify, evaluate, bench) and course/ (the exercise checkers).

Where the next families go (names reserved, files not written yet): models/mmdit.py (SD3), models/flux.py,
models/t5.py, models/clip.py's projection for SDXL's second text encoder; pipelines/sdxl.py, pipelines/sd3.py,
pipelines/flux.py; samplers/ gains the flow-matching samplers beside the DDPM family; adapters/ (LoRA, textual
inversion) and quantization/ beside the core; loading/gguf_file.py. tests/test_layout.py checks the floors.
"""

__version__ = "0.1.0"
