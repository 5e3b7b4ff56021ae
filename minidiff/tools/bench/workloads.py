"""The workloads: each function times one workload in the variants of both libraries and returns its rows.

    unet_rows            the U-Net step at each (batch, pixels) case
    vae_rows             the VAE decoder
    text_to_image_rows   a whole guided Euler run: text encoding + sampling + VAE decoding (tokenizing left out)
    text_encoder_rows    the text encoder on [unconditional; conditional] token ids
    compile_variants     torch.compile, added to a U-Net row and the whole run's row (slow: after the rest)
    diffusers_graph_variants   diffusers' models through minidiff's CUDA graph (risky: last of all)

Each builds its own copies of the models, so one workload's layout changes and fused layers never reach another,
and holds one library's copy at a time: every diffusers variant is measured, its copy freed, then minidiff's is
built (an SD 1.5 U-Net is 3.4 GB in float32, and the float32 references stay in memory throughout). The variants,
in the order each library measures them (each keeps the previous ones; diffusers first, as minidiff's rows are
also compared with diffusers' eager output):

    eager            the plain model, as loaded
    channels_last    feature maps stored (B, H, W, C)                              (``minidiff.fast``)
    fused_qkv        q, k, v from one matrix product (minidiff only)               (``minidiff.fast``)
    graph            the whole call captured once as a CUDA graph and replayed     (``minidiff.fast.CUDAGraphStep``)
    compile          ``torch.compile`` (optional: a minute or more of compiling per library)
"""

import copy
import time

import torch

from minidiff.fast import CUDAGraphStep, capture_guided_step, optimize_unet
from minidiff.tools.bench.configs import minidiff_copy
from minidiff.tools.bench.report import Measurement, Row, measurement_line
from minidiff.tools.bench.text_to_image import (GUIDANCE_SCALE, PlainGuidedStep, diffusers_text_to_image,
                                                minidiff_text_to_image)
from minidiff.tools.bench.timing import error_text, kernel_times, peak_mb, rel_error, synchronize, time_ms, unet_tflop

BOS, EOS = 49406, 49407
NETWORKS = ("text", "unet", "vae")  # what the whole run uses


class DtypeRun:
    """What the workloads of one dtype share: the run's config, the float32 reference models, the report's rows
    (``new_row`` adds to them at once, so that ``save()`` writes each measurement as soon as it is taken), and
    one random generator, drawn from in workload order, so that every run gets the same inputs."""

    def __init__(self, config, references, dtype_name, rows, save):
        self.config, self.references, self.rows, self.save = config, references, rows, save
        self.device, self.dtype_name, self.dtype = torch.device(config.device), dtype_name, getattr(torch, dtype_name)
        self.cuda = self.device.type == "cuda"
        self.generator = torch.Generator(self.device).manual_seed(0)

    def new_row(self, workload):
        row = Row(workload, self.dtype_name)
        self.rows.append(row)
        return row

    def randn(self, *shape):
        return torch.randn(shape, generator=self.generator, device=self.device, dtype=self.dtype)

    def token_ids(self):
        """(2, 77) ids: an empty prompt and a random 20-token one, each <bos> ... <eos> padded with <eos>."""
        ids = torch.full((2, 77), EOS, device=self.device)
        ids[:, 0] = BOS
        ids[1, 1:21] = torch.randint(0, BOS, (20,), generator=self.generator, device=self.device)
        return ids

    def reference_copy(self, name):
        """A new copy of the float32 reference ``name`` ("unet", "vae", "text") in this dtype."""
        return copy.deepcopy(self.references[name]).to(self.dtype)

    def minidiff_copy(self, name):
        """minidiff's network ``name``, new, in this dtype, with the reference's weights."""
        return minidiff_copy(name, self.references[name], self.dtype, self.config.tiny)


def measure(run, row, library, variant, build, graph=False):
    """Time one variant, add it to ``row`` and return its output. build() returns the function to time (for a
    graph it captures first: the capture counts in the peak memory). A failure is recorded in the row and the
    benchmark goes on."""
    m = Measurement(library, variant)
    row.measurements.append(m)
    out = None

    def build_and_call():
        fn = build()
        out = fn()  # the first call picks kernels (and compiles)
        synchronize(run.device)
        return fn, out

    try:
        start = time.perf_counter()
        if graph:
            (fn, out), m.peak_mb = peak_mb(build_and_call, run.device)
        else:
            fn, out = build_and_call()
        m.setup_s = time.perf_counter() - start
        if not graph and run.cuda:  # peak memory is measured on CUDA only
            out, m.peak_mb = peak_mb(fn, run.device)
        # one untimed call right before the timed ones, so that even --repeats 1 times a warm call
        m.ms, m.min_ms = time_ms(fn, run.device, 1, run.config.repeats, run.config.max_seconds)
        m.rel_err_fp32 = rel_error(out, row.extra.get("reference"))
        m.rel_err_vs_diffusers = rel_error(out, row.extra.get("diffusers eager"))
        if (library, variant) == ("diffusers", "eager"):
            row.extra["diffusers eager"] = out
    except Exception as exc:  # a failed variant is reported; the others still run
        m.error = error_text(exc)
    print(measurement_line(row, m), flush=True)
    run.save()
    return out


def captured(fn, *inputs):
    """build() for a graph variant: capture fn(*inputs) and return a function replaying it."""
    def build():
        step = CUDAGraphStep(fn, *inputs)
        return lambda: step(*inputs)
    return build


def measure_cases(run, rows, library, call, variant, graph=False):
    """Measure call(x, t, c) on the inputs of each U-Net row."""
    for row in rows:
        x, t, c = row.extra["inputs"]
        if graph:
            build = captured(lambda x, t=t, c=c: call(x, t, c), x)
        else:
            build = lambda x=x, t=t, c=c: lambda: call(x, t, c)
        measure(run, row, library, variant, build, graph=graph)


@torch.no_grad()
def unet_rows(run):
    """One row per (batch, pixels) of ``config.unet_cases``: the U-Net at t = 500 on random latents and context."""
    rows = []
    for batch, pixels in run.config.unet_cases:
        side = pixels // 8
        x, t, c = run.randn(batch, 4, side, side), torch.tensor(500.0, device=run.device), \
            run.randn(batch, 77, run.references["unet"].config.cross_attention_dim)
        row = run.new_row(f"unet b{batch} {pixels}px")
        row.extra.update(inputs=(x, t, c), reference=run.references["unet"](x.float(), t, c.float()).sample,
                         tflop=unet_tflop(run.config.tiny, batch, pixels))
        rows.append(row)

    theirs = run.reference_copy("unet")
    d_call = lambda x, t, c: theirs(x, t, c).sample
    measure_cases(run, rows, "diffusers", d_call, "eager")
    theirs.to(memory_format=torch.channels_last)
    measure_cases(run, rows, "diffusers", d_call, "channels_last")
    if run.cuda:
        kernel_profile(run, rows, "diffusers channels_last", d_call)
    del theirs, d_call  # freed before minidiff's copy is built

    ours = run.minidiff_copy("unet")
    measure_cases(run, rows, "minidiff", ours, "eager")
    if run.cuda:
        measure_cases(run, rows, "minidiff", ours, "eager + graph", graph=True)
    optimize_unet(ours, channels_last=False, fuse_qkv=True)
    measure_cases(run, rows, "minidiff", ours, "fused_qkv")
    ours.to(memory_format=torch.channels_last)
    measure_cases(run, rows, "minidiff", ours, "fused_qkv + channels_last")
    if run.cuda:
        measure_cases(run, rows, "minidiff", ours, "fused_qkv + channels_last + graph", graph=True)
        kernel_profile(run, rows, "minidiff fused_qkv + channels_last", ours)
    return rows


def kernel_profile(run, rows, name, call):
    """GPU time per kind of kernel in one eager call(x, t, c) at the compile case, as ``kernel_ms[name]`` of its
    row: what a graph can at best reach."""
    for row in rows:
        if row.workload != "unet b{} {}px".format(*run.config.compile_case):
            continue
        x, t, c = row.extra["inputs"]
        try:
            row.extra.setdefault("kernel_ms", {})[name] = kernel_times(lambda: call(x, t, c))
            print(f"  kernel time by kind (ms), {name}: {row.extra['kernel_ms'][name]}", flush=True)
        except Exception as exc:
            row.extra.setdefault("kernel_ms", {})[name] = error_text(exc)


@torch.no_grad()
def vae_rows(run):
    """The VAE decoder on random latents of ``config.vae_size`` pixels."""
    side = run.config.vae_size // 8
    z = run.randn(1, 4, side, side)
    row = run.new_row(f"vae decode {run.config.vae_size}px")
    row.extra.update(inputs=(z,), reference=run.references["vae"].decode(z.float()).sample)
    theirs = run.reference_copy("vae")
    measure(run, row, "diffusers", "eager", lambda: lambda: theirs.decode(z).sample)
    theirs.to(memory_format=torch.channels_last)
    measure(run, row, "diffusers", "channels_last", lambda: lambda: theirs.decode(z).sample)
    del theirs  # freed before minidiff's copy is built
    ours = run.minidiff_copy("vae")
    measure(run, row, "minidiff", "eager", lambda: lambda: ours.decode(z))
    ours.to(memory_format=torch.channels_last)
    measure(run, row, "minidiff", "channels_last", lambda: lambda: ours.decode(z))
    if run.cuda:
        measure(run, row, "minidiff", "channels_last + graph", captured(ours.decode, z), graph=True)
    return [row]


@torch.no_grad()
def text_to_image_rows(run):
    """A whole ``config.full_steps``-step guided run at ``config.full_size`` pixels: diffusers as loaded against
    minidiff's fast path (fused q/k/v; channels-last and one CUDA graph per guided step on the GPU)."""
    steps, size = run.config.full_steps, run.config.full_size
    ids, noise = run.token_ids(), run.randn(1, 4, size // 8, size // 8)
    row = run.new_row(f"text-to-image {steps} steps {size}px")
    refs = run.references
    row.extra.update(inputs=(ids, noise), reference=diffusers_text_to_image(
        refs["text"], refs["unet"], refs["vae"], ids, noise.float(), steps))
    theirs = {name: run.reference_copy(name) for name in NETWORKS}
    measure(run, row, "diffusers", "eager", lambda: lambda: diffusers_text_to_image(
        theirs["text"], theirs["unet"], theirs["vae"], ids, noise, steps))
    del theirs  # freed before minidiff's copies are built
    ours = {name: run.minidiff_copy(name) for name in NETWORKS}
    layout = torch.channels_last if run.cuda else torch.contiguous_format
    optimize_unet(ours["unet"], channels_last=False)
    for model in (ours["unet"], ours["vae"]):
        model.to(memory_format=layout)
    measure(run, row, "minidiff", "fast", minidiff_run(run, ours, ids, noise, steps), graph=run.cuda)
    return [row]


def minidiff_run(run, ours, ids, noise, steps, unet=None):
    """build() for minidiff's whole run: capture the guided step (a plain step on the CPU), then run."""
    unet = ours["unet"] if unet is None else unet  # not `unet or ...`: a compiled module has no truth value

    def build():
        context = ours["text"](ids).last_hidden_state
        if run.cuda:
            step = capture_guided_step(unet, noise.shape, context, GUIDANCE_SCALE)
        else:
            step = PlainGuidedStep(unet, context, GUIDANCE_SCALE)
        return lambda: minidiff_text_to_image(ours["text"], step, ours["vae"], ids, noise, steps)
    return build


@torch.no_grad()
def text_encoder_rows(run):
    """The text encoder on (2, 77) token ids: an empty prompt and a random one."""
    ids = run.token_ids()
    row = run.new_row("text encoder")
    row.extra["reference"] = run.references["text"](ids).last_hidden_state
    theirs = run.reference_copy("text")
    measure(run, row, "diffusers", "eager", lambda: lambda: theirs(ids).last_hidden_state)
    del theirs  # freed before minidiff's copy is built
    ours = run.minidiff_copy("text")
    measure(run, row, "minidiff", "eager", lambda: lambda: ours(ids).last_hidden_state)
    if run.cuda:
        measure(run, row, "minidiff", "graph", captured(lambda ids: ours(ids).last_hidden_state, ids), graph=True)
    return [row]


@torch.no_grad()
def compile_variants(run, unet_rows, full_rows):
    """torch.compile for the libraries in ``config.compile``, on the fastest setting of each (channels-last;
    minidiff also fused and in a graph), at the compile case's U-Net row and in the whole run's row. On the GPU
    only, where both libraries' copies fit beside each other."""
    ours = {name: run.minidiff_copy(name) for name in NETWORKS}
    theirs = {name: run.reference_copy(name) for name in NETWORKS}
    optimize_unet(ours["unet"])  # fused q/k/v and channels-last, as in the rows' fast variants
    ours["vae"].to(memory_format=torch.channels_last)
    theirs["unet"].to(memory_format=torch.channels_last)
    d_compiled, m_compiled = torch.compile(theirs["unet"]), torch.compile(ours["unet"])
    unet_row = next((r for r in unet_rows if r.workload == "unet b{} {}px".format(*run.config.compile_case)), None)
    full_row = full_rows[0] if full_rows else None
    steps = run.config.full_steps
    if "diffusers" in run.config.compile:  # first: its best simple setting is what the goal compares with
        if unet_row is not None:
            x, t, c = unet_row.extra["inputs"]
            measure(run, unet_row, "diffusers", "channels_last + compile", lambda: lambda: d_compiled(x, t, c).sample)
        if full_row is not None:
            ids, noise = full_row.extra["inputs"]
            measure(run, full_row, "diffusers", "channels_last + compile", lambda: lambda: diffusers_text_to_image(
                theirs["text"], d_compiled, theirs["vae"], ids, noise, steps))
    if "minidiff" in run.config.compile:
        if unet_row is not None:
            x, t, c = unet_row.extra["inputs"]
            measure(run, unet_row, "minidiff", "fused_qkv + channels_last + compile + graph",
                    captured(lambda x: m_compiled(x, t, c), x), graph=True)
        if full_row is not None:
            ids, noise = full_row.extra["inputs"]
            measure(run, full_row, "minidiff", "fast + compile", minidiff_run(run, ours, ids, noise, steps, m_compiled),
                    graph=True)


@torch.no_grad()
def diffusers_graph_variants(run, unet_rows, vae_rows):
    """diffusers' U-Net and VAE, channels-last, through minidiff's CUDAGraphStep: the same trick works for any
    model whose forward never waits for the CPU. Measured last: a capture that fails can leave the device
    unusable."""
    if unet_rows:
        unet = run.reference_copy("unet").to(memory_format=torch.channels_last)
        measure_cases(run, unet_rows, "diffusers", lambda x, t, c: unet(x, t, c).sample, "channels_last + graph",
                      graph=True)
    for row in vae_rows:
        vae = run.reference_copy("vae").to(memory_format=torch.channels_last)
        (z,) = row.extra["inputs"]
        measure(run, row, "diffusers", "channels_last + graph", captured(lambda z: vae.decode(z).sample, z),
                graph=True)
