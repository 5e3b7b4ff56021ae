"""Check a checkpoint end to end: does minidiff compute what diffusers and transformers compute with it?

``verify(path)`` loads the model twice, into minidiff and into the reference libraries, feeds both the same seeded
inputs and compares:

    tokenizer          token ids of a few prompts (long, empty, accented, emoji)     must be equal
    text encoder       last hidden state for those ids
    unet               ε prediction for random latents, timesteps and text embeddings
    vae encode/decode  posterior mean and std of a random picture; picture of a random latent
    controlnet         all residuals (when the model has a controlnet/ folder)
    every sampler      a short seeded text-to-image run (inpainting for a 9-channel U-Net), each sampler
                       with its diffusers scheduler, with Karras σ's off and, where available, on

diffusers samples with the model's own scheduler_config.json (for a single file, with the config minidiff
inferred), so a key the file leaves out takes each scheduler class's default on both sides. A sampler row that
cannot apply to the model is skipped, with the reason: diffusers' Heun and LMS schedulers have no zero-terminal-SNR
option (``rescale_betas_zero_snr``), so on such a checkpoint there is nothing to compare them with.

Each row reports max |a - b|, the relative error max |a - b| / max |b| and the tolerance that row was held to
(``TOLERANCES``: by dtype, one for a network and one for a whole run; token ids must be equal; a skipped row has
none). In float32 both libraries run the same operations, and on the CPU the tiny random model of the tests gives
identical numbers in every row (2, 3 and 10 steps; a folder, a single file, an inpainting U-Net, a zero-SNR
v-prediction scheduler; one and two threads): the tolerance, 1e-5 for networks and runs alike, leaves room only
for rounding in another order. In float16 and bfloat16 the networks are identical on the CPU too; their
tolerances (2e-2, 5e-2) allow for other kernels, not measured on a GPU. The run tolerances (3e-2, 2e-1) cover
inpainting, which came within 0.015 in float16 and 0.19 in bfloat16; text-to-image runs came within 2.4e-4 and
2.0e-3.

In float16 and bfloat16 a whole run takes diffusers' steps: the latents stay in the networks' dtype from the start
noise to the last step, and each sampler step rounds where the diffusers scheduler rounds (see
``minidiff/pipelines/base.py``), so runs differ only where the networks do. On the CPU the tiny random model's
final latents are identical in both dtypes; the images differ by diffusers' rounding of them to the networks'
dtype (up to 2^-12 in float16 and 2^-9 in bfloat16, near 1), as minidiff returns float32 images.

A single checkpoint file carries no configs and no tokenizer: diffusers reads it with ``from_single_file``, given
a folder of configs written from what minidiff inferred (the tensors themselves are converted independently).
diffusers and transformers are imported only inside these functions: minidiff never needs them otherwise.
"""

import inspect
import math
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from minidiff.loading import load_components
from minidiff.loading.saving import scheduler_json, write_model_folder_configs
from minidiff.samplers import KARRAS_SAMPLERS, SAMPLER_NAMES, SAMPLERS, make_sampler

# (one network, a whole sampling run): tolerances on the max relative error, as measured (module docstring)
TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-2, 3e-2), torch.bfloat16: (5e-2, 2e-1)}
PROMPTS = ["a red circle left of a blue square", "", "Ein Foto: café, naïve résumé ✨ 1984!!", "word " * 90]
SCHEDULERS = {name: sampler.diffusers_class for name, sampler in SAMPLERS.items()}  # sampler -> diffusers class
# Scheduler settings that not every diffusers class takes: its from_config drops them without a word (minidiff's
# sampler refuses them), so a sampler row with one of them on has no reference and is skipped.
OPTIONAL_SETTINGS = ("rescale_betas_zero_snr",)


@dataclass
class Check:
    """One row of the report: max abs error, max relative error and the tolerance on the latter; or, for a row
    that cannot apply to this model, the reason it was skipped (and no numbers)."""

    name: str
    max_abs: float | None
    max_rel: float | None
    tolerance: float | None
    skipped: str = ""

    @classmethod
    def skip(cls, name, reason):
        return cls(name, None, None, None, skipped=reason)

    @property
    def passed(self):
        return not self.skipped and self.max_rel <= self.tolerance  # False for NaN

    @property
    def failed(self):
        return not self.skipped and not self.passed

    def row(self):
        if self.skipped:
            return f"{self.name:<22} {'-':>12} {'-':>12} {'-':>10}   skipped: {self.skipped}"
        return (f"{self.name:<22} {self.max_abs:>12.3g} {self.max_rel:>12.3g} {self.tolerance:>10.0e}   "
                f"{'pass' if self.passed else 'FAIL'}")


HEADER = f"{'check':<22} {'max abs err':>12} {'max rel err':>12} {'tolerance':>10}   result"


def compare(name, ours, reference, tolerance):
    """A Check of ``ours`` against ``reference`` (tensors, or lists of tensors compared as one)."""
    if isinstance(reference, (list, tuple)):
        ours, reference = torch.cat([t.flatten() for t in ours]), torch.cat([t.flatten() for t in reference])
    ours, reference = ours.detach().double().cpu(), reference.detach().double().cpu()
    if ours.shape != reference.shape:
        return Check(f"{name} (shape {tuple(ours.shape)} vs {tuple(reference.shape)})", math.inf, math.inf, tolerance)
    max_abs = (ours - reference).abs().max().item()
    scale = reference.abs().max().item()
    return Check(name, max_abs, max_abs / scale if scale > 0 else max_abs, tolerance)


def write_config_folder(components, folder):
    """The configs, tokenizer and scheduler of ``components`` as a diffusers folder without weights (what
    ``from_single_file(config=...)`` reads)."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    write_model_folder_configs(replace(components, controlnet=None), folder)  # a single file has no ControlNet
    return folder


def load_reference(path, components, dtype, device, scratch):
    """diffusers/transformers' tokenizer, text encoder, VAE, U-Net (and ControlNet) for ``path``, as a dict."""
    import diffusers
    import transformers

    path = Path(path)
    if path.is_dir():
        networks = {
            "tokenizer": transformers.CLIPTokenizer.from_pretrained(path / "tokenizer"),
            "text_encoder": transformers.CLIPTextModel.from_pretrained(path / "text_encoder", dtype=dtype),
            "vae": diffusers.AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype),
            "unet": diffusers.UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=dtype),
        }
        if (path / "controlnet").is_dir():
            networks["controlnet"] = diffusers.ControlNetModel.from_pretrained(path / "controlnet", torch_dtype=dtype)
    else:
        config = write_config_folder(components, Path(scratch) / "config")
        pipe = diffusers.StableDiffusionPipeline.from_single_file(
            str(path), config=str(config), local_files_only=True, torch_dtype=dtype, safety_checker=None,
            requires_safety_checker=False)
        networks = {name: getattr(pipe, name) for name in ("tokenizer", "text_encoder", "vae", "unet")}
    for network in networks.values():
        if isinstance(network, torch.nn.Module):
            network.to(device).eval()
    return networks


def reference_scheduler_config(path, components, prediction_type):
    """The scheduler config diffusers samples with: a folder's own scheduler_config.json as diffusers reads it, or
    for a single file the one minidiff inferred; ``prediction_type``, when given, overrides it on both sides."""
    import diffusers

    path = Path(path)
    if path.is_dir():
        config = dict(diffusers.DDPMScheduler.load_config(path / "scheduler"))
        if "timestep_spacing" in config and config["timestep_spacing"] is None:
            raise ValueError(
                f"{path / 'scheduler' / 'scheduler_config.json'} says \"timestep_spacing\": null, which diffusers' "
                "schedulers refuse (older minidiff versions wrote it): delete that line, and each scheduler uses "
                "its own default, as minidiff does"
            )
    else:
        config = scheduler_json(components.scheduler_config)
    if prediction_type is not None:
        config["prediction_type"] = prediction_type
    return config


def not_applicable(scheduler_class, scheduler_config):
    """Why a run with diffusers' ``scheduler_class`` cannot be compared on this config ("" when it can)."""
    options = inspect.signature(scheduler_class.__init__).parameters
    missing = [key for key in OPTIONAL_SETTINGS if scheduler_config.get(key) and key not in options]
    return f"diffusers' {scheduler_class.__name__} has no {' or '.join(missing)} option" if missing else ""


@contextmanager
def exact_matmuls():
    """Turn TF32 off on CUDA (both libraries would round differently at 10 bits of mantissa)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@torch.no_grad()
def check_networks(ours, reference, size, dtype, device, tolerance):
    """The component rows: tokenizer, text encoder, U-Net, VAE encode/decode, ControlNet."""
    g = torch.Generator().manual_seed(0)
    ids = ours.tokenizer(PROMPTS).input_ids  # (P, 77)
    expected = reference["tokenizer"](PROMPTS, padding="max_length", max_length=ours.tokenizer.max_length,
                                      truncation=True, return_tensors="pt").input_ids
    mismatches = (ids != expected).sum().item() if ids.shape == expected.shape else ids.numel()
    yield Check("tokenizer (ids)", mismatches, mismatches / ids.numel(), 0.0)

    ids = expected.to(device)  # the text encoder is checked on the same ids, whatever the tokenizer row says
    yield compare("text encoder", ours.text_encoder(ids).last_hidden_state,
                  reference["text_encoder"](ids).last_hidden_state, tolerance)

    f = 2 ** (len(ours.vae.config.block_out_channels) - 1)
    unet = ours.unet.config
    sample = torch.randn(2, unet.in_channels, size // f, size // f, generator=g).to(device, dtype)
    timesteps = torch.tensor([999, 261], device=device)
    context = torch.randn(2, 77, unet.cross_attention_dim, generator=g).to(device, dtype)
    yield compare("unet", ours.unet(sample, timesteps, context),
                  reference["unet"](sample, timesteps, context).sample, tolerance)

    image = (torch.rand(1, 3, size, size, generator=g) * 2 - 1).to(device, dtype)
    posterior, expected_posterior = ours.vae.encode(image), reference["vae"].encode(image).latent_dist
    yield compare("vae encode", [posterior.mean, posterior.std], [expected_posterior.mean, expected_posterior.std],
                  tolerance)
    latents = torch.randn(1, ours.vae.config.latent_channels, size // f, size // f, generator=g).to(device, dtype)
    yield compare("vae decode", ours.vae.decode(latents), reference["vae"].decode(latents).sample, tolerance)

    if ours.controlnet is not None and "controlnet" in reference:
        condition = torch.rand(2, ours.controlnet.config.conditioning_channels, size, size, generator=g)
        condition = condition.to(device, dtype)
        latent = sample[:, : ours.controlnet.config.in_channels]
        down, mid = ours.controlnet(latent, timesteps, context, condition, conditioning_scale=0.9)
        expected_down, expected_mid = reference["controlnet"](latent, timesteps, context, condition,
                                                              conditioning_scale=0.9, return_dict=False)
        yield compare("controlnet", [*down, mid], [*expected_down, expected_mid], tolerance)


def cannot_run(name, scheduler_config, steps, karras):
    """Why minidiff's sampler ``name`` refuses this config and step count ("" when it runs), e.g. PNDM's
    Runge-Kutta warm-up, which needs 4 steps."""
    try:
        make_sampler(name, scheduler_config, steps, karras=karras)
    except ValueError as error:
        return f"{name}: {error}"
    return ""


def sampler_runs():
    """(row name, sampler, karras) for every sampler with Karras σ's off, and on where it has them."""
    for name in SAMPLER_NAMES:
        yield name, name, False
        if name in KARRAS_SAMPLERS:
            yield f"{name} karras", name, True


@torch.no_grad()
def check_samplers(ours, reference, scheduler_config, size, steps, tolerance):
    """One short seeded run per sampler: text to image (inpainting when the U-Net takes 9 channels); a run that
    cannot apply to this scheduler config is a skipped row."""
    import diffusers

    from minidiff.pipelines import StableDiffusion

    sd = StableDiffusion.from_components(ours)
    # DPM++ SDE's Brownian noise is seeded by the scheduler, not by the pipeline's generator: both sides get seed 0
    sd.scheduler_config = replace(sd.scheduler_config, noise_sampler_seed=0)
    inpainting = ours.unet.config.in_channels != ours.vae.config.latent_channels
    g = torch.Generator().manual_seed(1)
    picture = torch.nn.functional.interpolate(torch.rand(1, 3, size // 8, size // 8, generator=g), size=(size, size))
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 :] = 1
    pipeline_class = diffusers.StableDiffusionInpaintPipeline if inpainting else diffusers.StableDiffusionPipeline
    prompt, negative = PROMPTS[0], "blurry"
    for row, name, karras in sampler_runs():
        scheduler_class = getattr(diffusers, SCHEDULERS[name])
        reason = not_applicable(scheduler_class, scheduler_config) or cannot_run(name, sd.scheduler_config, steps, karras)
        if reason:
            yield Check.skip(row, reason)
            continue
        # both sides told whether to use Karras σ's, whatever the model's use_karras_sigmas says
        karras_option = {"use_karras_sigmas": karras} if name in KARRAS_SAMPLERS else {}
        seed_option = {"noise_sampler_seed": 0} if name == "dpmpp_sde" else {}
        scheduler = scheduler_class.from_config(scheduler_config, **karras_option, **SAMPLERS[name].diffusers_options,
                                                **seed_option)
        pipe = pipeline_class(**{k: reference[k] for k in ("tokenizer", "text_encoder", "vae", "unet")},
                              scheduler=scheduler, safety_checker=None, feature_extractor=None,
                              requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        run = dict(negative_prompt=negative, guidance_scale=7.5, generator=torch.Generator().manual_seed(0))
        common = dict(steps=steps, sampler=name, karras=karras, negative_prompt=negative, seed=0, progress=False)
        if inpainting:
            expected = pipe(prompt, image=picture, mask_image=mask, width=size, height=size, num_inference_steps=steps,
                            output_type="pt", **run).images
            result = sd.inpaint(prompt, picture, mask, **common)
        else:
            expected = pipe(prompt, width=size, height=size, num_inference_steps=steps, output_type="pt", **run).images
            result = sd.text_to_image(prompt, width=size, height=size, **common)
        yield compare(row, result.images, expected, tolerance)


def verify(path, device="cpu", dtype=torch.float32, steps=3, size=None, allow_pickle=False, prediction_type=None,
           report=print):
    """Compare minidiff with diffusers/transformers on the model at ``path``; report(line) gets the table as it
    grows. size: picture side in pixels (default 8 latent pixels). Returns the list of Checks, skipped rows
    included (``Check.failed`` tells the rows that ran and missed their tolerance)."""
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype must be one of {', '.join(map(str, TOLERANCES))}, got {dtype}")
    network_tolerance, run_tolerance = TOLERANCES[dtype]
    ours = load_components(path, dtype=dtype, device=device, allow_pickle=allow_pickle,
                           prediction_type=prediction_type)
    size = size or 8 * 2 ** (len(ours.vae.config.block_out_channels) - 1)
    checks = []
    report(HEADER)
    with tempfile.TemporaryDirectory() as scratch, exact_matmuls():
        reference = load_reference(path, ours, dtype, device, scratch)
        scheduler_config = reference_scheduler_config(path, ours, prediction_type)
        rows = [check_networks(ours, reference, size, dtype, device, network_tolerance),
                check_samplers(ours, reference, scheduler_config, size, steps, run_tolerance)]
        for row in rows:
            for check in row:
                checks.append(check)
                report(check.row())
    return checks
