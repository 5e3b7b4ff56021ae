"""Speed and memory of minidiff against diffusers on the Stable Diffusion 1.5 architecture, in one run.

Both libraries build the SD 1.5-size U-Net, VAE and text encoder; one set of random weights is copied into both,
key for key. Every workload is then run in several variants of each library, in this order (each step keeps the
previous ones):

    eager            the plain model, as loaded
    channels_last    feature maps stored (B, H, W, C)                              (``minidiff.fast``)
    fused_qkv        q, k, v from one matrix product (minidiff only)               (``minidiff.fast``)
    graph            the whole call captured once as a CUDA graph and replayed     (``minidiff.fast.CUDAGraphStep``)
    compile          ``torch.compile`` (optional: a minute or more of compiling per library)

and each variant reports its median time, its peak memory (above the weights) and its output error against a
float32 reference (diffusers/transformers in float32, TF32 off). Workloads: the U-Net step at several batch sizes
and resolutions, the VAE decoder at 512 px, the text encoder on [unconditional; conditional] prompts, and a whole
50-step guided text-to-image run (Euler; text encoding + sampling + VAE decoding; tokenizing left out).

Timing: warm up, synchronise the device around every call, take the median of the repeats; peak memory is
measured on a separate call (for a graph: from before its capture). diffusers and transformers are imported only
here: they are the reference, never a dependency of the rest of minidiff.
"""

import copy
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field

import torch

from minidiff.fast import CUDAGraphStep, capture_guided_step, optimize_unet

SD15_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "in_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
SD15_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 512,
}
SD15_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
# The same architectures, tiny: for trying the benchmark itself on a CPU in seconds.
TINY_UNET = {**SD15_UNET, "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8,
             "cross_attention_dim": 32, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}
TINY_VAE = {**SD15_VAE, "block_out_channels": [32, 64], "norm_num_groups": 8, "layers_per_block": 1,
            "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}
TINY_TEXT = {**SD15_TEXT, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
             "num_hidden_layers": 2, "projection_dim": 32}
WORKLOADS = ("unet", "vae", "text", "full")
GUIDANCE_SCALE = 7.5
BOS, EOS = 49406, 49407


@dataclass
class BenchConfig:
    """What to run. ``unet_cases``: (batch, pixels) of the U-Net steps; ``compile_case``: the one case that also
    gets the torch.compile variants of the libraries in ``compile``; ``full_steps``: sampler steps of the whole
    run. ``repeats`` and ``max_seconds`` bound each measurement: it stops at whichever comes first."""

    device: str = "cuda"
    dtypes: tuple = ("float16",)
    workloads: tuple = WORKLOADS
    unet_cases: tuple = ((1, 512), (2, 512), (8, 512), (2, 768))
    vae_size: int = 512
    full_size: int = 512
    full_steps: int = 50
    compile: tuple = ()  # libraries to also run through torch.compile: "diffusers", "minidiff"
    compile_case: tuple = (2, 512)
    repeats: int = 20
    max_seconds: float = 10.0  # per measurement: stop repeating after this long
    tiny: bool = False


@dataclass
class Measurement:
    """One variant of one library on one workload: median (and fastest) ms, peak MB above the weights, max
    relative error against the float32 reference and against diffusers' eager output in the same dtype."""

    library: str
    variant: str
    ms: float = math.nan
    min_ms: float = math.nan
    peak_mb: float = math.nan
    rel_err_fp32: float = math.nan
    rel_err_vs_diffusers: float = math.nan
    setup_s: float = math.nan  # one-time cost: capture or compilation
    error: str = ""


@dataclass
class Row:
    """A workload in one dtype, with every measured variant of both libraries."""

    workload: str
    dtype: str
    measurements: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def get(self, library, variant):
        return next((m for m in self.measurements if (m.library, m.variant) == (library, variant)), None)

    def best(self, library, own_only=True):
        """The fastest variant of ``library``; own_only leaves out diffusers run through minidiff's CUDA graph."""
        done = [m for m in self.measurements if m.library == library and not m.error and not math.isnan(m.ms)
                and not (own_only and library == "diffusers" and "graph" in m.variant)]
        return min(done, key=lambda m: m.ms, default=None)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device, warmup, repeats, max_seconds):
    """(median, minimum) wall time of ``fn()`` in milliseconds after ``warmup`` calls, synchronising around each
    call. On a shared CPU the minimum is the least disturbed run."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times, start_all = [], time.perf_counter()
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
        if time.perf_counter() - start_all > max_seconds:
            break
    return statistics.median(times), min(times)


def peak_mb(fn, device):
    """(fn()'s result, peak device memory in MB allocated while it ran, above what was allocated before)."""
    if device.type != "cuda":
        return fn(), math.nan
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    out = fn()
    synchronize(device)
    return out, (torch.cuda.max_memory_allocated(device) - before) / 2**20


def rel_error(ours, reference):
    """max |ours - reference| / max |reference|, in float64; NaN if either is missing."""
    if ours is None or reference is None:
        return math.nan
    ours, reference = ours.detach().double().cpu(), reference.detach().double().cpu()
    return ((ours - reference).abs().max() / reference.abs().max().clamp_min(1e-30)).item()


@torch.no_grad()
def randomize_(model, seed=0):
    """Norm scales 1 + N(0, 0.1^2), biases N(0, 0.1^2), weights N(0, 1/fan_in): realistic activation sizes, and
    no zero-initialised layer (diffusers zero-initialises some) hides an error."""
    generator = torch.Generator(next(model.parameters()).device).manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=generator, device=p.device)
        if p.ndim == 1:
            p.copy_(0.1 * noise + (1.0 if name.endswith("weight") else 0.0))
        else:
            p.copy_(noise / math.sqrt(p[0].numel()))


def build_references(device, tiny=False):
    """diffusers' U-Net and VAE and transformers' text encoder, float32, random weights, on ``device``."""
    import diffusers
    from diffusers import AutoencoderKL as DAutoencoderKL
    from diffusers import UNet2DConditionModel as DUNet
    from transformers import CLIPTextConfig as TCLIPTextConfig
    from transformers import CLIPTextModel as TCLIPTextModel

    diffusers.utils.logging.set_verbosity_error()  # quiet about casting models with .to(dtype)
    unet_cfg, vae_cfg, text_cfg = (TINY_UNET, TINY_VAE, TINY_TEXT) if tiny else (SD15_UNET, SD15_VAE, SD15_TEXT)
    with torch.device(device):
        models = {"unet": DUNet(**unet_cfg), "vae": DAutoencoderKL(**vae_cfg),
                  "text": TCLIPTextModel(TCLIPTextConfig(**text_cfg))}
    for seed, model in enumerate(models.values()):
        randomize_(model, seed)
        model.eval().requires_grad_(False)
    return models, (unet_cfg, vae_cfg, text_cfg)


def build_pair(references, configs, dtype):
    """The reference models converted to ``dtype``, and minidiff's models with the same weights."""
    from minidiff.models.clip import CLIPTextConfig, CLIPTextModel
    from minidiff.models.unet import UNet2DConditionModel, UNetConfig
    from minidiff.models.vae import AutoencoderKL, VAEConfig

    unet_cfg, vae_cfg, text_cfg = configs
    with torch.device("meta"):
        ours = {"unet": UNet2DConditionModel(UNetConfig.from_dict(unet_cfg)),
                "vae": AutoencoderKL(VAEConfig.from_dict(vae_cfg)),
                "text": CLIPTextModel(CLIPTextConfig.from_dict(text_cfg))}
    pairs = {}
    for name, model in ours.items():
        reference = references[name]
        device = next(reference.parameters()).device
        model.to_empty(device=device).to(dtype)
        state = reference.state_dict()
        if name == "text":  # transformers 5 names the weights without the "text_model." prefix
            state = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in state.items()}
            state.pop("text_model.embeddings.position_ids", None)
        model.load_state_dict(state, strict=True)
        model.eval().requires_grad_(False)
        pairs[name] = (model, copy.deepcopy(reference).to(dtype))
    return pairs


def diffusers_text_to_image(text_encoder, unet, vae, ids, noise, steps):
    """A guided Euler text-to-image run the way diffusers' StableDiffusionPipeline does it (minus tokenizing)."""
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    scheduler.set_timesteps(steps, device=noise.device)
    context = text_encoder(ids).last_hidden_state  # (2, 77, D)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(torch.cat([x] * 2), t)
        uncond, cond = unet(x_in, t, context).sample.chunk(2)
        x = scheduler.step(uncond + GUIDANCE_SCALE * (cond - uncond), t, x).prev_sample
    return vae.decode(x / 0.18215).sample


def minidiff_text_to_image(text_encoder, guided_step, vae, ids, noise, steps):
    """The same run with minidiff's Euler sampler and a captured guided step (``minidiff.fast``)."""
    from minidiff.samplers import SchedulerConfig, make_sampler

    sampler = make_sampler("euler", SchedulerConfig(), steps)
    guided_step.set_context(text_encoder(ids).last_hidden_state)
    x = sampler.sample(guided_step, noise * sampler.init_noise_sigma)
    return vae.decode(x / 0.18215)


class Bench:
    """Runs the workloads in one dtype and appends a Row per workload to ``rows``; ``save()`` after each
    measurement writes what is known so far."""

    def __init__(self, config, references, configs, dtype_name, rows, save):
        self.config, self.references, self.rows, self.save = config, references, rows, save
        self.device, self.dtype_name, self.dtype = torch.device(config.device), dtype_name, getattr(torch, dtype_name)
        self.cuda = self.device.type == "cuda"
        self.pairs = build_pair(references, configs, self.dtype)
        self.context_dim = configs[0]["cross_attention_dim"]
        self.generator = torch.Generator(self.device).manual_seed(0)

    def randn(self, *shape):
        return torch.randn(shape, generator=self.generator, device=self.device, dtype=self.dtype)

    def token_ids(self):
        """(2, 77) ids: an empty prompt and a random 20-token one, each <bos> ... <eos> padded with <eos>."""
        ids = torch.full((2, 77), EOS, device=self.device)
        ids[:, 0] = BOS
        ids[1, 1:21] = torch.randint(0, BOS, (20,), generator=self.generator, device=self.device)
        return ids

    def row(self, workload):
        row = Row(workload, self.dtype_name)
        self.rows.append(row)
        return row

    def measure(self, row, library, variant, build, graph=False):
        """Time one variant. build() returns the function to time (for a graph, it captures first: the capture
        counts in the peak memory). A failure is recorded in the row and the benchmark goes on."""
        m = Measurement(library, variant)
        row.measurements.append(m)
        out = None

        def build_and_call():
            fn = build()
            out = fn()  # the first call picks kernels (and compiles)
            synchronize(self.device)
            return fn, out

        try:
            start = time.perf_counter()
            if graph:
                (fn, out), m.peak_mb = peak_mb(build_and_call, self.device)
            else:
                fn, out = build_and_call()
            m.setup_s = time.perf_counter() - start
            if not graph:
                out, m.peak_mb = peak_mb(fn, self.device)
            m.ms, m.min_ms = time_ms(fn, self.device, 0, self.config.repeats, self.config.max_seconds)  # warm already
            m.rel_err_fp32 = rel_error(out, row.extra.get("reference"))
            m.rel_err_vs_diffusers = rel_error(out, row.extra.get("diffusers eager"))
            if (library, variant) == ("diffusers", "eager"):
                row.extra["diffusers eager"] = out
        except Exception as exc:  # a failed variant is reported; the others still run
            m.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        print(f"  {row.workload:16s} {self.dtype_name:9s} {library:9s} {variant:34s} {m.ms:9.2f} ms "
              f"{m.peak_mb:8.0f} MB  err {m.rel_err_fp32:.1e}  setup {m.setup_s:5.1f} s {m.error}", flush=True)
        self.save()
        return out

    def graph(self, fn, *inputs):
        """build() for a graph variant: capture fn(*inputs) and return a function replaying it."""
        def build():
            step = CUDAGraphStep(fn, *inputs)
            return lambda: step(*inputs)
        return build

    def run(self):
        for workload in ("unet", "vae", "full", "text"):
            if workload in self.config.workloads:
                self.guarded(getattr(self, workload))

    @staticmethod
    def guarded(stage):
        """Run one stage; if its setup fails (not one measurement: those are guarded already), print the
        traceback and go on with the next, so that one failure does not cost the whole run."""
        try:
            stage()
        except Exception:
            traceback.print_exc()

    def forget_tensors(self):
        """Drop the inputs and outputs kept in the rows for later variants (they stay out of the JSON anyway)."""
        for row in self.rows:
            for key in [k for k, v in row.extra.items() if torch.is_tensor(v) or isinstance(v, tuple)]:
                del row.extra[key]

    @torch.no_grad()
    def unet(self):
        ours, theirs = self.pairs["unet"]
        cases = []
        for batch, pixels in self.config.unet_cases:
            side = pixels // 8
            x, t, c = self.randn(batch, 4, side, side), torch.tensor(500.0, device=self.device), \
                self.randn(batch, 77, self.context_dim)
            row = self.row(f"unet b{batch} {pixels}px")
            row.extra.update(inputs=(x, t, c), reference=self.references["unet"](x.float(), t, c.float()).sample,
                             tflop=unet_tflop(self.config.tiny, batch, pixels))
            cases.append(row)
        d_call = lambda x, t, c: theirs(x, t, c).sample

        def each_case(library, call, variant, graph=False):
            for row in cases:
                x, t, c = row.extra["inputs"]
                if graph:
                    build = self.graph(lambda x, t=t, c=c: call(x, t, c), x)
                else:
                    build = lambda x=x, t=t, c=c: lambda: call(x, t, c)
                self.measure(row, library, variant, build, graph=graph)

        each_case("diffusers", d_call, "eager")
        each_case("minidiff", ours, "eager")
        if self.cuda:
            each_case("minidiff", ours, "eager + graph", graph=True)
        optimize_unet(ours, channels_last=False, fuse_qkv=True)
        each_case("minidiff", ours, "fused_qkv")
        ours.to(memory_format=torch.channels_last)
        each_case("minidiff", ours, "fused_qkv + channels_last")
        if self.cuda:
            each_case("minidiff", ours, "fused_qkv + channels_last + graph", graph=True)
        theirs.to(memory_format=torch.channels_last)
        each_case("diffusers", d_call, "channels_last")
        if self.cuda:
            self.kernel_profile(cases, d_call, ours)
        self.unet_cases = cases, each_case, d_call

    def kernel_profile(self, cases, d_call, ours):
        """GPU time per kind of kernel in one eager call at the compile case: what a graph can at best reach."""
        for row in cases:
            if row.workload != "unet b{} {}px".format(*self.config.compile_case):
                continue
            x, t, c = row.extra["inputs"]
            try:
                row.extra["kernel_ms"] = {"diffusers channels_last": kernel_times(lambda: d_call(x, t, c)),
                                          "minidiff fused_qkv + channels_last": kernel_times(lambda: ours(x, t, c))}
                print(f"  kernel time by kind (ms): {row.extra['kernel_ms']}", flush=True)
            except Exception as exc:
                row.extra["kernel_ms"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]

    @torch.no_grad()
    def text(self):
        ours, theirs = self.pairs["text"]
        ids = self.token_ids()
        row = self.row("text encoder")
        row.extra["reference"] = self.references["text"](ids).last_hidden_state
        for library, model in (("diffusers", theirs), ("minidiff", ours)):
            self.measure(row, library, "eager", lambda model=model: lambda: model(ids).last_hidden_state)
        if self.cuda:
            self.measure(row, "minidiff", "graph", self.graph(lambda ids: ours(ids).last_hidden_state, ids),
                         graph=True)

    @torch.no_grad()
    def vae(self):
        ours, theirs = self.pairs["vae"]
        side = self.config.vae_size // 8
        z = self.randn(1, 4, side, side)
        row = self.row(f"vae decode {self.config.vae_size}px")
        row.extra["reference"] = self.references["vae"].decode(z.float()).sample
        d_decode = lambda z: theirs.decode(z).sample
        self.measure(row, "diffusers", "eager", lambda: lambda: d_decode(z))
        self.measure(row, "minidiff", "eager", lambda: lambda: ours.decode(z))
        for model in (ours, theirs):
            model.to(memory_format=torch.channels_last)
        self.measure(row, "minidiff", "channels_last", lambda: lambda: ours.decode(z))
        if self.cuda:
            self.measure(row, "minidiff", "channels_last + graph", self.graph(ours.decode, z), graph=True)
        self.measure(row, "diffusers", "channels_last", lambda: lambda: d_decode(z))
        self.vae_case = row, z, d_decode

    @torch.no_grad()
    def full(self):
        ours, theirs = self.models()
        side, steps = self.config.full_size // 8, self.config.full_steps
        ids, noise = self.token_ids(), self.randn(1, 4, side, side)
        row = self.row(f"text-to-image {steps} steps {self.config.full_size}px")
        refs = self.references
        row.extra.update(inputs=(ids, noise), reference=diffusers_text_to_image(
            refs["text"], refs["unet"], refs["vae"], ids, noise.float(), steps))
        for model in (theirs["unet"], theirs["vae"]):  # diffusers as loaded
            model.to(memory_format=torch.contiguous_format)
        self.measure(row, "diffusers", "eager", lambda: lambda: diffusers_text_to_image(
            theirs["text"], theirs["unet"], theirs["vae"], ids, noise, steps))
        layout = torch.channels_last if self.cuda else torch.contiguous_format
        optimize_unet(ours["unet"], channels_last=False)
        for model in (ours["unet"], ours["vae"]):
            model.to(memory_format=layout)
        self.measure(row, "minidiff", "fast", self.minidiff_run(ours, ids, noise, steps), graph=self.cuda)

    def models(self):
        """({name: minidiff model}, {name: diffusers/transformers model}) in this dtype."""
        return {k: v[0] for k, v in self.pairs.items()}, {k: v[1] for k, v in self.pairs.items()}

    def minidiff_run(self, ours, ids, noise, steps, unet=None):
        """build() for minidiff's whole run: capture the guided step (a plain step on the CPU), then run."""
        unet = ours["unet"] if unet is None else unet  # not `unet or ...`: a compiled module has no truth value

        def build():
            context = ours["text"](ids).last_hidden_state
            if self.cuda:
                step = capture_guided_step(unet, noise.shape, context, GUIDANCE_SCALE)
            else:
                step = PlainGuidedStep(unet, context, GUIDANCE_SCALE)
            return lambda: minidiff_text_to_image(ours["text"], step, ours["vae"], ids, noise, steps)
        return build

    @torch.no_grad()
    def compile_variants(self):
        """torch.compile for the libraries in ``config.compile``, at the compile case and in the whole run."""
        ours, theirs = self.models()
        theirs["unet"].to(memory_format=torch.channels_last)
        d_compiled, m_compiled = torch.compile(theirs["unet"]), torch.compile(ours["unet"])
        unet_row = next((r for r in self.rows if r.workload == "unet b{} {}px".format(*self.config.compile_case)
                         and r.dtype == self.dtype_name), None)
        full_row = next((r for r in self.rows if r.workload.startswith("text-to-image")
                         and r.dtype == self.dtype_name), None)
        steps = self.config.full_steps
        if "diffusers" in self.config.compile:  # first: its best simple setting is what the goal compares with
            if unet_row is not None:
                x, t, c = unet_row.extra["inputs"]
                self.measure(unet_row, "diffusers", "channels_last + compile",
                             lambda: lambda: d_compiled(x, t, c).sample)
            if full_row is not None:
                ids, noise = full_row.extra["inputs"]
                self.measure(full_row, "diffusers", "channels_last + compile", lambda: lambda: diffusers_text_to_image(
                    theirs["text"], d_compiled, theirs["vae"], ids, noise, steps))
        if "minidiff" in self.config.compile:
            if unet_row is not None:
                x, t, c = unet_row.extra["inputs"]
                self.measure(unet_row, "minidiff", "fused_qkv + channels_last + compile + graph",
                             self.graph(lambda x: m_compiled(x, t, c), x), graph=True)
            if full_row is not None:
                ids, noise = full_row.extra["inputs"]
                self.measure(full_row, "minidiff", "fast + compile",
                             self.minidiff_run(ours, ids, noise, steps, m_compiled), graph=True)

    @torch.no_grad()
    def diffusers_graphs(self):
        """diffusers' U-Net and VAE through minidiff's CUDAGraphStep: the same trick works for any model whose
        forward never waits for the CPU. Measured last: a capture that fails can leave the device unusable."""
        if hasattr(self, "unet_cases"):
            cases, each_case, d_call = self.unet_cases
            self.pairs["unet"][1].to(memory_format=torch.channels_last)
            each_case("diffusers", d_call, "channels_last + graph", graph=True)
        if hasattr(self, "vae_case"):
            row, z, d_decode = self.vae_case
            self.pairs["vae"][1].to(memory_format=torch.channels_last)
            self.measure(row, "diffusers", "channels_last + graph", self.graph(d_decode, z), graph=True)


class PlainGuidedStep:
    """The guided step without a graph (for the CPU): same interface as ``minidiff.fast.GuidedStep``."""

    def __init__(self, unet, context, guidance_scale):
        self.unet, self.context, self.guidance_scale = unet, context, guidance_scale

    def set_context(self, context):
        self.context = context

    def __call__(self, x, t):
        uncond, cond = self.unet(torch.cat([x] * 2).to(self.unet.dtype), t, self.context).chunk(2)
        return uncond + self.guidance_scale * (cond - uncond)


KERNEL_KINDS = (  # (kind, substrings of the kernel name), first match wins
    ("attention", ("flash", "fmha", "attention", "softmax")),
    ("convolution", ("conv", "fprop", "dgrad", "implicit", "winograd")),
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "sm90", "sm80")),
    ("group_norm", ("group_norm", "groupnorm", "rowwisemoments", "computefused")),
    ("layer_norm", ("layer_norm", "layernorm")),
    ("layout copy", ("nchwtonhwc", "nhwctonchw", "copy", "transpose", "cat")),
)


def kernel_times(fn):
    """GPU time (ms) of one fn() call by kind of kernel, from the profiler, plus the number of kernels."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    totals, count = {}, 0
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        name = event.name.lower()
        kind = next((k for k, keys in KERNEL_KINDS if any(s in name for s in keys)), "elementwise and other")
        totals[kind] = totals.get(kind, 0.0) + event.time_range.elapsed_us() / 1000
        count += 1
    totals = {k: round(v, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
    return {"total": round(sum(totals.values()), 3), "kernels": count, **totals}


@functools.lru_cache
def unet_tflop(tiny, batch, pixels):
    """Floating-point operations (in 10^12) of one U-Net call, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    from minidiff.models.unet import UNet2DConditionModel, UNetConfig

    config = UNetConfig.from_dict(TINY_UNET if tiny else SD15_UNET)
    side = pixels // 8
    with torch.device("meta"):
        unet = UNet2DConditionModel(config)
        x, context = torch.empty(batch, 4, side, side), torch.empty(batch, 77, config.cross_attention_dim)
    with FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor(500.0, device="meta"), context)
    return counter.get_total_flops() / 1e12


def matmul_tflops(device, dtype):
    """Measured rate of a large matrix product in ``dtype`` (10^12 FLOP/s): the arithmetic ceiling."""
    n = 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    ms, _ = time_ms(lambda: a @ b, device, 3, 10, 5.0)
    return 2 * n**3 / (ms / 1000) / 1e12


def environment(device):
    import diffusers
    import transformers

    info = {"command": " ".join(["python -m minidiff bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"]
            else " ".join(sys.argv),
            "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "machine": platform.machine()}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    else:  # other programs on the same cores slow every measurement: the load average tells
        info.update(cpu_threads=torch.get_num_threads(), load_average_at_start=os.getloadavg())
    return info


def run_benchmark(config, out_path=None):
    """Run every dtype of ``config``; print the tables; write JSON to ``out_path`` (also as it goes)."""
    device = torch.device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # both libraries: let cuDNN time its algorithms once per shape
        torch.backends.cudnn.allow_tf32 = False  # the float32 reference must be float32
        torch.backends.cuda.matmul.allow_tf32 = False
    info = environment(device)
    rows = []

    def save():
        if out_path is not None:
            write_json(rows, info, config, out_path)

    references, configs = build_references(device, config.tiny)
    benches = []
    for dtype_name in config.dtypes:
        if device.type == "cuda" and "unet" in config.workloads:
            info[f"matmul_tflops_{dtype_name}"] = round(matmul_tflops(device, getattr(torch, dtype_name)), 1)
            print(f"{dtype_name} matrix product: {info[f'matmul_tflops_{dtype_name}']} TFLOP/s", flush=True)
        print(f"{dtype_name} on {info.get('gpu', 'cpu')}:", flush=True)
        benches.append(Bench(config, references, configs, dtype_name, rows, save))
        benches[-1].run()
    if device.type == "cuda":  # the slow and the risky variants last, so that the rest is saved whatever happens
        if config.compile:
            print(f"torch.compile of {', '.join(config.compile)} ({config.dtypes[0]}):", flush=True)
            benches[0].guarded(benches[0].compile_variants)
        print("diffusers through CUDA graphs:", flush=True)
        for bench in benches:
            bench.guarded(bench.diffusers_graphs)
    for bench in benches:
        bench.forget_tensors()
    if device.type == "cpu":
        info["load_average_at_end"] = os.getloadavg()
    save()
    print_tables(rows, info)
    return rows


def write_json(rows, info, config, path):
    payload = {
        "environment": info,
        "config": {k: [list(c) for c in v] if k == "unet_cases" else (list(v) if isinstance(v, tuple) else v)
                   for k, v in asdict(config).items()},
        "rows": [{**asdict(row), "extra": {k: v for k, v in row.extra.items()
                                           if not (torch.is_tensor(v) or isinstance(v, tuple))}} for row in rows],
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=str)


def fmt(m, key="ms", spec="{:.2f}"):
    return "-" if m is None or math.isnan(getattr(m, key)) else spec.format(getattr(m, key))


def print_tables(rows, info):
    """Per workload: each library's eager and best variant, the ratio minidiff/diffusers, peak memory, errors."""
    print("\n" + ", ".join(f"{k}={v}" for k, v in info.items()))
    header = (f"{'workload':26s} {'dtype':9s} {'diffusers':>9s} {'best':>9s} {'minidiff':>9s} {'best':>9s} "
              f"{'ratio':>6s} {'ratio':>6s} {'floor':>6s} {'peak MB':>11s} {'err vs fp32':>17s}")
    print(header)
    print(f"{'':26s} {'':9s} {'eager ms':>9s} {'ms':>9s} {'eager ms':>9s} {'ms':>9s} {'eager':>6s} {'best':>6s} "
          f"{'ms':>6s} {'d / m':>11s} {'d / m':>17s}")
    print("-" * len(header))
    for row in rows:
        d_eager, m_eager = row.get("diffusers", "eager"), row.get("minidiff", "eager")
        d_best, m_best = row.best("diffusers"), row.best("minidiff")
        ratio = lambda a, b: "-" if a is None or b is None or math.isnan(a.ms / b.ms) else f"{a.ms / b.ms:.2f}"
        rate = info.get(f"matmul_tflops_{row.dtype}")
        floor = f"{row.extra['tflop'] / rate * 1000:.1f}" if rate and "tflop" in row.extra else "-"
        peaks = f"{fmt(d_best, 'peak_mb', '{:.0f}')}/{fmt(m_best, 'peak_mb', '{:.0f}')}"
        errs = f"{fmt(d_best, 'rel_err_fp32', '{:.1e}')}/{fmt(m_best, 'rel_err_fp32', '{:.1e}')}"
        print(f"{row.workload:26s} {row.dtype:9s} {fmt(d_eager):>9s} {fmt(d_best):>9s} {fmt(m_eager):>9s} "
              f"{fmt(m_best):>9s} {ratio(m_eager, d_eager):>6s} {ratio(m_best, d_best):>6s} {floor:>6s} "
              f"{peaks:>11s} {errs:>17s}")
    print("best = fastest variant of each library (diffusers: its own options only); ratio = minidiff / diffusers;"
          " floor = FLOPs / measured matmul rate\n")
    print(f"{'workload':26s} {'dtype':9s} {'library':9s} {'variant':44s} {'ms':>9s} {'min ms':>9s} {'peak MB':>8s} "
          f"{'err fp32':>8s} {'err vs d':>8s} {'setup s':>7s}")
    for row in rows:
        for m in row.measurements:
            print(f"{row.workload:26s} {row.dtype:9s} {m.library:9s} {m.variant:44s} {fmt(m):>9s} {fmt(m, 'min_ms'):>9s} "
                  f"{fmt(m, 'peak_mb', '{:.0f}'):>8s} {fmt(m, 'rel_err_fp32', '{:.1e}'):>8s} "
                  f"{fmt(m, 'rel_err_vs_diffusers', '{:.1e}'):>8s} {fmt(m, 'setup_s', '{:.1f}'):>7s} {m.error}")
