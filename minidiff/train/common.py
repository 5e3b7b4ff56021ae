"""What every training stage shares: seeds, an EMA of the weights, checkpoints, a progress bar and a loss plot.

Each stage (``vae.py``, ``clip.py``, ``unet.py``, ``controlnet.py``) builds its networks and writes one
function, ``loss_fn(scenes, generator) -> loss``, that renders a batch of fresh scenes and returns the
stage's objective. ``fit`` is the loop they all share:

    for step in range(start, steps):
        scenes = draw_scenes(seed, step)              # the batch and the noise depend on (seed, step) only
        loss = loss_fn(scenes, step_generator(seed, step))
        loss.backward(); clip the gradient norm; AdamW step with linear warm-up (and cool-down)
        ema <- decay * ema + (1 - decay) * weights

Because every random draw of a step comes from a generator seeded by ``(seed, step)``, stopping at any
checkpoint and resuming gives the same weights as training without a stop.
"""

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm

from minidiff.atomic import atomic_file
from minidiff.data.shapes import render_scenes, sample_scene


@dataclasses.dataclass
class TrainConfig:
    """The optimisation settings every stage shares (a stage's config adds its own fields)."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-4
    warmup_steps: int = 100
    cooldown_steps: int = 0  # the lr falls linearly to 0 over the last cooldown_steps of `steps` (0: no cool-down)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.0  # 0 turns the EMA off
    seed: int = 0
    device: str = "cpu"
    bf16: bool = True  # bf16 autocast, used on CUDA only
    image_size: int = 128
    log_every: int = 50
    checkpoint_every: int = 1000


def seed_everything(seed):
    """Seed Python's, NumPy's and PyTorch's global generators (for weight initialisation)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_generator(seed, step, device):
    """A torch.Generator on ``device`` seeded by (seed, step) alone: the source of a step's noise and timesteps."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)


def render(scenes, config, device):
    """Scenes -> images (B, 3, S, S) in [-1, 1] on ``device``, S = config.image_size; and their captions."""
    return render_scenes(scenes, config.image_size, device) * 2 - 1, [scene.caption for scene in scenes]


def autocast(config):
    """bf16 autocast on CUDA when the config asks for it; a no-op elsewhere."""
    if config.bf16 and torch.device(config.device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

        ema <- d * ema + (1 - d) * theta,    d = min(decay, (1 + n) / (10 + n))

    where n counts the updates; the warm-up of d lets the average forget the random initialisation quickly.
    """

    def __init__(self, model, decay):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = model.state_dict()
        # One fused call over all tensors (a loop of lerp_ would launch one GPU kernel per tensor).
        torch._foreach_lerp_(list(self.shadow.values()), [current[k].float() for k in self.shadow], 1.0 - d)

    def copy_to(self, model):
        """Load the averaged weights into ``model`` (same architecture); integer buffers keep the model's values."""
        model.load_state_dict({**model.state_dict(), **self.shadow})

    def state_dict(self):
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state):
        self.decay, self.updates = state["decay"], state["updates"]
        self.shadow = {k: v.float().to(self.shadow[k].device) for k, v in state["shadow"].items()}


def learning_rate(config, step, warm_from=0):
    """The lr for 0-based ``step``: linear warm-up from lr/warmup_steps to lr over ``warmup_steps`` steps (counted
    from ``warm_from``), then lr; over the last ``cooldown_steps`` of ``config.steps`` it falls linearly towards 0.

        lr(step) = lr * min(1, (step - warm_from + 1) / warmup_steps, (steps - step) / cooldown_steps)

    The cool-down is the cheap way to finish a run trained at a constant lr: the last steps average out
    the noise of the large ones before them, as the EMA does, and the loss drops a little further.
    """
    scale = min(1.0, (step - warm_from + 1) / max(1, config.warmup_steps))
    if config.cooldown_steps > 0:
        scale = min(scale, (config.steps - step) / config.cooldown_steps)
    return config.lr * scale


def save_checkpoint(path, model, optimizer, ema, step, losses, config, with_optimizer=True):
    """Write everything needed to resume: weights, EMA, optimizer state, step, loss history, config.

    ``with_optimizer=False`` leaves the AdamW moments out (a third of the size); resuming then restarts
    them with a fresh warm-up.
    """
    state = {
        "step": step,
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict() if with_optimizer else None,
        "losses": losses,
        "config": dataclasses.asdict(config),
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_file(path) as f:  # a crash never leaves a half-written checkpoint
        torch.save(state, f)


def load_checkpoint(path, model, optimizer=None, ema=None):
    """Restore what ``save_checkpoint`` wrote; returns (step, losses, has_optimizer_state).

    A checkpoint without an EMA (a ``slim_checkpoint``) restarts the average from the loaded weights. AdamW's
    moments are restored only when they belong to the same parameters (not when, say, a VAE trained whole
    goes on with its decoder alone); otherwise AdamW restarts, as from a slim checkpoint.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    if ema is not None:
        ema.load_state_dict(state["ema"] if state["ema"] is not None else EMA(model, ema.decay).state_dict())
    has_optimizer = state["optimizer"] is not None
    if optimizer is not None and has_optimizer:
        sizes = [len(group["params"]) for group in optimizer.param_groups]
        has_optimizer = sizes == [len(group["params"]) for group in state["optimizer"]["param_groups"]]
        if has_optimizer:
            optimizer.load_state_dict(state["optimizer"])
    return state["step"], state["losses"], has_optimizer


def slim_checkpoint(path, dest):
    """Copy a checkpoint with only its final weights (the EMA when there is one) in float16: a third or less
    of the size, for moving between machines. Resuming from it restarts AdamW (with a fresh warm-up) and the
    EMA from those weights."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = state["model"]
    if state["ema"] is not None:
        weights = {**weights, **state["ema"]["shadow"]}
    weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    torch.save({**state, "model": weights, "ema": None, "optimizer": None}, dest)


def plot_losses(losses, path, title):
    """Save the loss curve (raw per-step values and a running mean) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(losses) + 1)
    values = np.asarray(losses, dtype=np.float64)
    window = max(1, len(values) // 50)
    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, values, color="0.8", linewidth=0.5, label="per step")
    ax.plot(steps[window - 1 :], smooth, color="C0", label=f"mean of {window}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def draw_scenes(seed, step, batch_size):
    """The scenes of one training step, a function of (seed, step) alone (NumPy, on the CPU)."""
    rng = np.random.default_rng([seed, step])
    return [sample_scene(rng) for _ in range(batch_size)]


def fit(name, model, loss_fn, config, out_dir, parameters=None, resume=True, time_limit=None):
    """Train ``model`` by minimising ``loss_fn(scenes, generator)`` for ``config.steps`` steps; returns the losses.

    Each step gets fresh scenes (``draw_scenes``, drawn one step ahead in a background thread, since that is
    Python work the GPU need not wait for) and a torch.Generator for its noise (``step_generator``).
    ``parameters``: what AdamW updates (default: all of ``model``'s). Writes ``out_dir/{name}.pt`` (the
    checkpoint, every ``checkpoint_every`` steps and at the end), ``{name}_loss.png`` and ``{name}_log.jsonl``.
    With ``resume=True`` an existing checkpoint is picked up where it stopped; ``time_limit`` (seconds) stops
    early, with a checkpoint, so a run can be continued later. After training, the EMA weights (when the
    EMA is on) are loaded into ``model``.
    """
    device = torch.device(config.device)
    os.makedirs(out_dir, exist_ok=True)
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions once
    model.to(device).train()
    parameters = list(model.parameters() if parameters is None else parameters)
    optimizer = torch.optim.AdamW(
        parameters, lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay, fused=device.type == "cuda"
    )
    ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
    path = os.path.join(out_dir, f"{name}.pt")
    start, losses, warm_from = 0, [], 0
    if resume and os.path.exists(path):
        start, losses, has_optimizer = load_checkpoint(path, model, optimizer, ema)
        warm_from = 0 if has_optimizer else start  # no AdamW moments: warm up again from here

    log = open(os.path.join(out_dir, f"{name}_log.jsonl"), "a")
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=name, mininterval=5.0)
    prefetch = ThreadPoolExecutor(max_workers=1)
    next_scenes = prefetch.submit(draw_scenes, config.seed, start, config.batch_size)
    started, pending = time.time(), []
    for step in bar:
        scenes = next_scenes.result()
        next_scenes = prefetch.submit(draw_scenes, config.seed, step + 1, config.batch_size)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step, warm_from)
        with autocast(config):
            loss = loss_fn(scenes, step_generator(config.seed, step, device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        pending.append(loss.detach().float())  # read back only when logging: no GPU sync every step
        done = step + 1
        out_of_time = time_limit is not None and time.time() - started > time_limit
        last = done == config.steps or out_of_time
        if done % config.log_every == 0 or done % config.checkpoint_every == 0 or last:
            losses.extend(torch.stack(pending).tolist())
            pending = []
            if not math.isfinite(losses[-1]):
                raise RuntimeError(f"{name}: the loss became {losses[-1]} at step {done}; lower lr and resume.")
            recent = float(np.mean(losses[-config.log_every :]))
            bar.set_postfix(loss=f"{recent:.4g}")
            record = {"step": done, "loss": recent, "grad_norm": round(float(grad_norm), 4),
                      "lr": learning_rate(config, step, warm_from), "seconds": round(time.time() - started, 1)}
            log.write(json.dumps(record) + "\n")
            log.flush()
        if done % config.checkpoint_every == 0 or last:
            save_checkpoint(path, model, optimizer, ema, done, losses, config)
            plot_losses(losses, os.path.join(out_dir, f"{name}_loss.png"), f"{name}: training loss")
        if out_of_time:
            print(f"{name}: time limit reached at step {done}; resume to continue.")
            break
    prefetch.shutdown(cancel_futures=True)
    log.close()
    if ema is not None:
        ema.copy_to(model)
    model.eval()
    return losses
