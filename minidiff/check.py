"""The exercise checker: run a learner's function against minidiff's own code and say what differs.

    python -m minidiff.check --list                      the exercises, with the lesson each belongs to
    python -m minidiff.check add_noise                   check lessons/exercises/add_noise.py
    python -m minidiff.check add_noise --file my.py      check the function add_noise defined in my.py

Each exercise is a function with a fixed name and signature (the stub in ``lessons/exercises/`` states the formula
and the shapes). The checker imports it from the file, calls it on random inputs (several seeds, shapes and
settings) and compares the result with what minidiff computes for the same inputs. On a difference it prints the
case, the shape or the element that differs and by how much, and a hint; when the wrong answer equals a known
mistake (a missing square root, a flipped sign) the hint names it. Exit status 0 means every case matched.

Adding an exercise: write the stub and the solution under ``lessons/``, then a function here decorated with
``@exercise(name, lesson, summary)`` that takes the learner's function and raises ``Mismatch`` on a wrong answer
(``compare`` does the comparing). tests/test_exercises.py then checks that the stub fails and the solution passes.
"""

import argparse
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
EXERCISES_DIR = ROOT / "lessons" / "exercises"


class Mismatch(Exception):
    """The learner's function gave a wrong answer; the message says in which case, where, and why."""


class LearnerError(Exception):
    """The learner's function raised an exception (other than NotImplementedError) in one case."""

    def __init__(self, case, error):
        super().__init__(case)
        self.case, self.error = case, error


@dataclass
class Exercise:
    name: str
    lesson: str  # the lesson that explains it, e.g. "01-forward-diffusion"
    summary: str  # one line for --list
    check: object  # check(fn) -> number of cases; raises Mismatch or LearnerError


EXERCISES = {}


def exercise(name, lesson, summary):
    """Register ``check(fn)`` as the checker of exercise ``name``."""

    def register(check):
        EXERCISES[name] = Exercise(name, lesson, summary, check)
        return check

    return register


def call(fn, case, *args):
    """fn(*args), with any exception other than NotImplementedError tagged with the case that raised it."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise
    except Exception as exc:
        raise LearnerError(case, exc) from exc


def close(a, b, rtol, atol):
    return a.shape == b.shape and bool(((a.double() - b.double()).abs() <= atol + rtol * b.double().abs()).all())


def compare(got, expected, case, hint, mistakes=None, rtol=1e-4, atol=1e-5):
    """Raise Mismatch unless ``got`` is a tensor of ``expected``'s shape with values within atol + rtol |expected|.

    mistakes: {description: tensor} of what common wrong formulas give; if ``got`` equals one, it is named.
    """
    if not isinstance(got, torch.Tensor):
        raise Mismatch(f"{case}: expected a torch.Tensor, got {type(got).__name__}. {hint}")
    if got.shape != expected.shape:
        raise Mismatch(
            f"{case}: your result has shape {tuple(got.shape)}, expected {tuple(expected.shape)}. {hint}"
        )
    if not got.is_floating_point():
        raise Mismatch(f"{case}: your result has dtype {got.dtype}; expected floating point ({expected.dtype}).")
    got, expected = got.detach(), expected.detach()
    diff = (got.double() - expected.double()).abs()
    bad = diff > atol + rtol * expected.double().abs()
    if not bad.any():
        return float(diff.max()) if diff.numel() else 0.0
    index = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0]) if torch.isfinite(diff).all() else tuple(
        int(i) for i in torch.nonzero(bad)[0]
    )
    message = (
        f"{case}: {int(bad.sum())} of {bad.numel()} values differ; the largest difference is "
        f"{float(diff[index]):.3g} at index {list(index)}: you gave {float(got[index]):.6g}, "
        f"expected {float(expected[index]):.6g}."
    )
    for description, wrong in (mistakes or {}).items():
        if close(got, wrong, rtol, atol):
            raise Mismatch(f"{message}\nYour result equals {description}.")
    raise Mismatch(f"{message}\nHint: {hint}")


def randn(generator, *shape):
    return torch.randn(*shape, generator=generator)


# --------------------------------------------------------------------------------------------------------------
# Lesson 1: the forward process


@exercise("add_noise", "01-forward-diffusion", "sample q(x_t | x_0): x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε")
def check_add_noise(fn):
    from minidiff.schedule import NoiseSchedule, make_betas

    hint = ("x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε, with ᾱ_t = alphas_cumprod[t[b]] for sample b, reshaped to "
            "(B, 1, 1, ...) so it broadcasts over the other dimensions of x0.")
    cases = [("scaled_linear", (4, 3, 8, 8)), ("linear", (2, 4, 16, 16)), ("squaredcos_cap_v2", (5, 2)),
             ("scaled_linear", (3, 1, 4, 6, 2))]
    for seed, (beta_schedule, shape) in enumerate(cases):
        g = torch.Generator().manual_seed(seed)
        schedule = NoiseSchedule(make_betas(beta_schedule))
        x0, noise = randn(g, *shape), randn(g, *shape)
        t = torch.randint(0, 1000, (shape[0],), generator=g)
        t[0] = 0 if seed % 2 else 999  # both ends of the schedule
        case = f"case {seed + 1}: {beta_schedule} schedule, x0 of shape {shape}, t = {t.tolist()}"
        got = call(fn, case, x0.clone(), noise.clone(), schedule.alphas_cumprod.clone(), t.clone())
        ab = schedule.alphas_cumprod[t].reshape(-1, *[1] * (len(shape) - 1))
        compare(got, schedule.add_noise(x0, noise, t), case, hint, mistakes={
            "ᾱ x0 + (1 - ᾱ) ε: the coefficients need square roots (the variances add, not the standard deviations)":
                ab * x0 + (1 - ab) * noise,
            "sqrt(ᾱ) x0 + (1 - ᾱ) ε: the noise coefficient needs a square root too": ab.sqrt() * x0 + (1 - ab) * noise,
            "sqrt(1 - ᾱ) x0 + sqrt(ᾱ) ε: the two coefficients are swapped": (1 - ab).sqrt() * x0 + ab.sqrt() * noise,
        })
    return len(cases)


# --------------------------------------------------------------------------------------------------------------
# Lesson 3: samplers. Each step of the learner's update is compared with the same step of minidiff's sampler,
# run with a fixed made-up network so that every step sees different, non-trivial inputs.


def made_up_network(x, t):
    """A deterministic stand-in for a trained network: some smooth function of x and t, shaped like x."""
    return torch.tanh(x) * 0.7 + 0.1 * torch.sin(torch.as_tensor(t, dtype=x.dtype) / 100.0) + 0.05 * x.roll(1, -1)


def record_run(sampler, x):
    """Run ``sampler`` with the made-up network; return one dict per step: x before, model output, x0, x after."""
    steps, outputs = [], []

    def model_fn(x_in, t):
        outputs.append(made_up_network(x_in, t))
        return outputs[-1]

    def callback(i, t, x_after, x0):
        steps.append({"t": t, "x_after": x_after.clone(), "x0": x0.clone(), "output": outputs[-1].clone()})

    sampler.sample(model_fn, x, callback=callback)
    for i, step in enumerate(steps):
        step["x_before"] = x if i == 0 else steps[i - 1]["x_after"]
    return steps


@exercise("ddim_step", "03-samplers", "one deterministic DDIM update from x_t and the predicted noise ε")
def check_ddim_step(fn):
    from minidiff.samplers import SchedulerConfig, make_sampler

    hint = ("first x0 = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t), then x_prev = sqrt(ᾱ_prev) x0 + sqrt(1 - ᾱ_prev) ε "
            "(the same ε: with eta = 0 no fresh noise is drawn).")
    settings = [
        ("Stable Diffusion's schedule, 10 steps", SchedulerConfig(), 10, (2, 4, 8, 8)),
        ("trailing spacing, ᾱ = 1 after the last step, 4 steps",
         SchedulerConfig(timestep_spacing="trailing", set_alpha_to_one=True), 4, (1, 3, 6, 6)),
        ("linear betas, 7 steps", SchedulerConfig(beta_schedule="linear", beta_start=1e-4, beta_end=0.02), 7, (3, 2, 5)),
    ]
    count = 0
    for seed, (label, config, steps, shape) in enumerate(settings):
        sampler = make_sampler("ddim", config, steps)
        alphas_cumprod = sampler.schedule.alphas_cumprod
        final = torch.tensor(1.0) if config.set_alpha_to_one else alphas_cumprod[0]
        x = randn(torch.Generator().manual_seed(seed), *shape)
        for i, step in enumerate(record_run(sampler, x)):
            t = int(step["t"])
            t_prev = t - config.num_train_timesteps // steps
            ab, ab_prev = alphas_cumprod[t], (alphas_cumprod[t_prev] if t_prev >= 0 else final)
            case = (f"{label}, step {i + 1} (t = {t} -> {t_prev if t_prev >= 0 else 'the end'}, "
                    f"ᾱ_t = {float(ab):.4g}, ᾱ_prev = {float(ab_prev):.4g}), x_t of shape {shape}")
            x_t, eps = step["x_before"], step["output"]
            got = call(fn, case, x_t.clone(), eps.clone(), ab.clone(), ab_prev.clone())
            x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
            compare(got, step["x_after"], case, hint, mistakes={
                "sqrt(ᾱ_prev) x_t + sqrt(1 - ᾱ_prev) ε: x_t must first be turned into the predicted x0":
                    ab_prev.sqrt() * x_t + (1 - ab_prev).sqrt() * eps,
                "sqrt(ᾱ_prev) x0 + sqrt(1 - ᾱ_t) ε: the noise is re-added at the new level, sqrt(1 - ᾱ_prev)":
                    ab_prev.sqrt() * x0 + (1 - ab).sqrt() * eps,
                "the predicted x0 itself: the step should land at noise level ᾱ_prev, not at the clean image":
                    x0,
            })
            count += 1
    return count


@exercise("euler_step", "03-samplers", "one Euler step of the probability-flow ODE in σ-space")
def check_euler_step(fn):
    from minidiff.samplers import SchedulerConfig, make_sampler

    hint = "the slope is d = (x - denoised) / σ and the step is x_next = x + (σ_next - σ) d."
    settings = [
        ("Stable Diffusion's schedule, 8 steps", SchedulerConfig(), 8, False, (2, 4, 8, 8)),
        ("Karras sigmas, 5 steps", SchedulerConfig(), 5, True, (1, 3, 6, 6)),
        ("linspace spacing, v-prediction, 6 steps",
         SchedulerConfig(timestep_spacing="linspace", prediction_type="v_prediction"), 6, False, (3, 2, 5)),
    ]
    count = 0
    for seed, (label, config, steps, karras, shape) in enumerate(settings):
        sampler = make_sampler("euler", config, steps, karras=karras)
        sigmas = sampler.sigmas
        x = randn(torch.Generator().manual_seed(seed), *shape) * sampler.init_noise_sigma
        for i, step in enumerate(record_run(sampler, x)):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            case = f"{label}, step {i + 1} (σ = {float(sigma):.4g} -> {float(sigma_next):.4g}), x of shape {shape}"
            x_before, denoised = step["x_before"], step["x0"]
            got = call(fn, case, x_before.clone(), denoised.clone(), sigma.clone(), sigma_next.clone())
            d = (x_before - denoised) / sigma
            compare(got, step["x_after"], case, hint, mistakes={
                "x + (σ - σ_next) d: the step goes from σ to σ_next, so it is (σ_next - σ) d, a negative multiple":
                    x_before + (sigma - sigma_next) * d,
                "x + (σ_next - σ) (x - denoised): the slope is divided by σ": x_before + (sigma_next - sigma) * d * sigma,
                "x + (σ_next - σ) (denoised - x) / σ: the slope points from the clean image to x, (x - denoised) / σ":
                    x_before - (sigma_next - sigma) * d,
            })
            count += 1
    return count


# --------------------------------------------------------------------------------------------------------------
# Lesson 6: cross-attention in the U-Net


@exercise("cross_attention", "06-unet", "multi-head cross-attention from the q/k/v/out projection weights")
def check_cross_attention(fn):
    from minidiff.models.transformer import CrossAttention

    hint = ("q = x W_q^T, k = context W_k^T, v = context W_v^T; split the last dimension into `heads` heads of "
            "d = inner_dim / heads; per head softmax(q k^T / sqrt(d)) v with the softmax over the context tokens; "
            "join the heads back to (B, T_q, inner_dim); out = h W_out^T + b_out.")
    # (B, T_q, query_dim, T_k, context_dim, heads, head_dim)
    cases = [(2, 16, 32, 7, 24, 4, 8), (1, 5, 12, 3, 12, 1, 12), (3, 9, 20, 77, 16, 2, 6), (2, 4, 8, 10, 8, 8, 1)]
    for seed, (B, T_q, query_dim, T_k, context_dim, heads, head_dim) in enumerate(cases):
        g = torch.Generator().manual_seed(seed)
        layer = CrossAttention(query_dim, heads, head_dim, context_dim=context_dim)
        with torch.no_grad():
            for p in layer.parameters():
                p.copy_(randn(g, *p.shape) * 0.3)
        x, context = randn(g, B, T_q, query_dim), randn(g, B, T_k, context_dim)
        case = (f"case {seed + 1}: x {tuple(x.shape)}, context {tuple(context.shape)}, {heads} heads of "
                f"{head_dim} channels")
        weights = [layer.to_q.weight, layer.to_k.weight, layer.to_v.weight, layer.to_out[0].weight,
                   layer.to_out[0].bias]
        got = call(fn, case, x.clone(), context.clone(), *[w.detach().clone() for w in weights], heads)
        with torch.no_grad():
            expected = layer(x, context)

            def variant(scale=None, n_heads=heads, softmax_dim=-1, project=True):
                """The attention with one thing done differently (for naming a learner's mistake)."""
                d = heads * head_dim // n_heads
                split = lambda h: h.view(B, -1, n_heads, d).transpose(1, 2)  # (B, n_heads, T, d)
                q, k, v = split(layer.to_q(x)), split(layer.to_k(context)), split(layer.to_v(context))
                scores = q @ k.transpose(-1, -2) * (d**-0.5 if scale is None else scale)  # (B, n_heads, T_q, T_k)
                h = (scores.softmax(softmax_dim) @ v).transpose(1, 2).reshape(B, T_q, heads * head_dim)
                return layer.to_out[0](h) if project else h

            mistakes = {
                "attention without the 1/sqrt(d) scale of the scores": variant(scale=1.0),
                "the scores scaled by 1/sqrt(inner_dim) instead of 1/sqrt(d), d the width of one head":
                    variant(scale=(heads * head_dim) ** -0.5),
                "the softmax taken over the image tokens (dim -2); it must normalise over the context tokens":
                    variant(softmax_dim=-2),
                "one head of width inner_dim: split the channels into `heads` heads": variant(n_heads=1),
                "the attention output before the output projection (W_out, b_out)": variant(project=False),
            }
            # a "mistake" that gives the right answer for this case (one head, say) is no mistake here
            mistakes = {k: v for k, v in mistakes.items() if not close(v, expected, 1e-4, 1e-5)}
        compare(got, expected, case, hint, mistakes=mistakes)
    return len(cases)


# --------------------------------------------------------------------------------------------------------------
# Lesson 7: classifier-free guidance


class _FixedOutputUNet:
    """Stands in for the U-Net inside the pipeline's guided model function: it returns fixed predictions for the
    [unconditional; conditional] batch, whatever the input."""

    dtype = torch.float32

    def __init__(self, uncond, cond):
        self.output = torch.cat([uncond, cond])

    def __call__(self, x, t, context, **residuals):
        return self.output


@exercise("classifier_free_guidance", "07-guidance", "combine the unconditional and conditional predictions")
def check_classifier_free_guidance(fn):
    from minidiff.pipelines.base import PipelineBase

    hint = "guided = uncond + s (cond - uncond): start at the unconditional prediction, move s times the difference."
    cases = [((1, 4, 8, 8), 7.5), ((2, 4, 6, 6), 1.5), ((3, 4, 5, 7), 12.0), ((2, 1, 4, 4), 3.0)]
    for seed, (shape, scale) in enumerate(cases):
        g = torch.Generator().manual_seed(seed)
        uncond, cond = randn(g, *shape), randn(g, *shape)
        case = f"case {seed + 1}: predictions of shape {shape}, guidance scale {scale}"
        got = call(fn, case, uncond.clone(), cond.clone(), scale)
        # minidiff's pipeline: the guided model function a sampler calls, around a U-Net with fixed outputs
        model_fn = PipelineBase.guided_unet(SimpleNamespace(unet=_FixedOutputUNet(uncond, cond)), None, scale)
        expected = model_fn(torch.zeros(shape), torch.tensor(500))
        compare(got, expected, case, hint, mistakes={
            "cond + s (cond - uncond): the extrapolation starts from the unconditional prediction":
                cond + scale * (cond - uncond),
            "uncond + s cond: guidance moves along the difference cond - uncond": uncond + scale * cond,
            "cond + s (uncond - cond): the sign is flipped; guidance moves away from the unconditional prediction":
                cond + scale * (uncond - cond),
        })
    return len(cases)


# --------------------------------------------------------------------------------------------------------------
# Lesson 10: ControlNet


def _tiny_unet_and_controlnet(seed):
    """A small random minidiff U-Net and a ControlNet copied from it, every weight non-zero."""
    from minidiff.models.controlnet import ControlNetModel
    from minidiff.models.unet import UNet2DConditionModel, UNetConfig

    config = UNetConfig(sample_size=8, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                        cross_attention_dim=8, attention_head_dim=2,
                        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    g = torch.Generator().manual_seed(seed)
    unet = UNet2DConditionModel(config)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 8))
    with torch.no_grad():
        for p in [*unet.parameters(), *controlnet.parameters()]:
            p.copy_(randn(g, *p.shape) * 0.2)
    return unet, controlnet


@exercise("zero_convolution", "10-controlnet", "a 1x1 convolution initialised to zero, and why it leaves the U-Net as it was")
def check_zero_convolution(fn):
    from minidiff.models.controlnet import zero_conv

    hint = "build nn.Conv2d(in_channels, out_channels, kernel_size=1), then set its weight and bias to 0."
    count = 0
    for in_channels, out_channels in ((4, 4), (3, 8), (16, 5)):
        case = f"zero_convolution({in_channels}, {out_channels})"
        conv = call(fn, case, in_channels, out_channels)
        reference = zero_conv(in_channels, out_channels)
        if not isinstance(conv, nn.Conv2d):
            raise Mismatch(f"{case}: returned a {type(conv).__name__}; expected an nn.Conv2d. {hint}")
        for key, expected in reference.state_dict().items():
            got = conv.state_dict().get(key)
            if got is None:
                raise Mismatch(f"{case}: the convolution has no {key}; it needs a weight and a bias. {hint}")
            if got.shape != expected.shape:
                raise Mismatch(f"{case}: {key} has shape {tuple(got.shape)}, expected {tuple(expected.shape)} "
                               f"(out_channels, in_channels, 1, 1) for a 1x1 convolution. {hint}")
            if got.abs().max() != 0:
                raise Mismatch(f"{case}: {key} is not zero (largest |value| {float(got.abs().max()):.3g}): PyTorch "
                               f"initialises convolutions randomly; set it to zero, e.g. nn.init.zeros_(conv.{key}).")
        x = randn(torch.Generator().manual_seed(count), 2, in_channels, 5, 5)
        compare(call(fn, case, in_channels, out_channels)(x), reference(x), f"{case} applied to x {tuple(x.shape)}",
                "a 1x1 convolution keeps the height and width (no padding needed, stride 1).")

        # It must be able to learn: out = W x + b, so dL/dW = dL/dout x^T, which is not zero although W is.
        conv.zero_grad()
        out = conv(x)
        if out.requires_grad:
            (out * randn(torch.Generator().manual_seed(99), *out.shape)).sum().backward()
        if not conv.weight.requires_grad or conv.weight.grad is None or conv.weight.grad.abs().max() == 0:
            raise Mismatch(f"{case}: the weight gets no gradient; keep it a trainable nn.Parameter (requires_grad) "
                           "so that training can move it away from zero.")
        count += 1

    # Why it matters: with zero convolutions on every skip, a fresh ControlNet adds exactly nothing to the U-Net.
    unet, controlnet = _tiny_unet_and_controlnet(seed=0)
    channels = [conv.in_channels for conv in controlnet.controlnet_down_blocks]
    controlnet.controlnet_down_blocks = nn.ModuleList(call(fn, "the ControlNet's skips", c, c) for c in channels)
    mid = controlnet.controlnet_mid_block.in_channels
    controlnet.controlnet_mid_block = call(fn, "the ControlNet's mid block", mid, mid)
    g = torch.Generator().manual_seed(1)
    latents, context, condition = randn(g, 2, 4, 8, 8), randn(g, 2, 3, 8), torch.rand(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        down, mid_residual = controlnet(latents, 500, context, condition)
        plain = unet(latents, 500, context)
        controlled = unet(latents, 500, context, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid_residual)
    compare(controlled, plain, "a tiny U-Net with a fresh ControlNet built from your zero convolutions",
            "every residual the ControlNet adds passes through a zero convolution, so at initialisation the U-Net's "
            "output must not change.")
    return count + 1


# --------------------------------------------------------------------------------------------------------------
# The command line


def load_function(path, name):
    """Import the file at ``path`` and return its function ``name``; raise ValueError with advice if impossible."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no file at {path}; give the file that defines {name}() with --file PATH")
    spec = importlib.util.spec_from_file_location(f"exercise_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception:
        raise ValueError(f"{path} could not be imported:\n{traceback.format_exc(limit=-1)}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{path} defines no function named {name}(); keep the name and signature of the stub")
    return fn


def run_check(name, path=None, out=sys.stdout):
    """Check exercise ``name`` against the function in ``path`` (default: its stub). Returns the exit status."""
    ex = EXERCISES[name]
    path = Path(path) if path else EXERCISES_DIR / f"{name}.py"
    print(f"checking {name}() from {path}", file=out)
    try:
        fn = load_function(path, name)
        cases = ex.check(fn)
    except ValueError as exc:
        print(f"FAIL: {exc}", file=out)
        return 1
    except NotImplementedError:
        print(f"FAIL: {name}() is not implemented yet: replace the `raise NotImplementedError` in {path} with your "
              f"code (lessons/{ex.lesson}.md explains it).", file=out)
        return 1
    except LearnerError as exc:
        error = exc.error  # the traceback from the learner's function down, without the checker's own frame
        error = "".join(traceback.format_exception(type(error), error, error.__traceback__.tb_next))
        print(f"FAIL: {exc.case}: your function raised an exception:\n{error}", file=out)
        return 1
    except Mismatch as exc:
        print(f"FAIL: {exc}", file=out)
        return 1
    print(f"PASS: {name}() matches minidiff in all {cases} cases.", file=out)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m minidiff.check",
        description="Check an exercise from lessons/exercises/ against minidiff's own code.",
    )
    parser.add_argument("exercise", nargs="?", help="the exercise to check (see --list)")
    parser.add_argument("--file", help="the Python file that defines the function (default: its stub in "
                                       "lessons/exercises/)")
    parser.add_argument("--list", action="store_true", help="list the exercises")
    args = parser.parse_args(argv)
    if args.list or args.exercise is None:
        width = max(map(len, EXERCISES))
        for ex in EXERCISES.values():
            print(f"{ex.name:<{width}}  lesson {ex.lesson:<22}  {ex.summary}")
        return 0
    if args.exercise not in EXERCISES:
        print(f"error: unknown exercise {args.exercise!r}; choose one of {', '.join(EXERCISES)}", file=sys.stderr)
        return 2
    return run_check(args.exercise, args.file)


if __name__ == "__main__":
    raise SystemExit(main())
