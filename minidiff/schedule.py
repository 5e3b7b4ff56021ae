"""The forward (noising) process of a diffusion model: betas, ᾱ_t, σ_t and the three ways to predict noise.

Training picks a timestep t in 0..T-1 and mixes a clean latent x_0 with Gaussian noise ε:

    x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε,        ᾱ_t = ∏_{s<=t} (1 - β_s)

The betas β_t come from a *beta schedule*; Stable Diffusion uses ``scaled_linear`` from 0.00085 to 0.012 over
T = 1000 steps. The same process seen "variance exploding" style (k-diffusion, Euler, Heun, LMS) divides by
sqrt(ᾱ_t): x_t / sqrt(ᾱ_t) = x_0 + σ_t ε with σ_t = sqrt((1 - ᾱ_t) / ᾱ_t).

The network predicts one of three equivalent targets (``prediction_type``):
``epsilon`` (the noise ε), ``v_prediction`` (v = sqrt(ᾱ) ε - sqrt(1-ᾱ) x_0, used by SD 2.x 768 models) or
``sample`` (x_0 itself). The helpers below turn any of them into x_0 or ε.

Arrays are float32, built exactly as diffusers builds them, so that minidiff's samplers reproduce diffusers'
numbers; the network never sees more precision than this anyway.
"""

import math
from dataclasses import dataclass

import torch

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def make_betas(beta_schedule, num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012):
    """β_t for t = 0..T-1, a (T,) float32 tensor.

    linear:            β_t evenly spaced from beta_start to beta_end (DDPM)
    scaled_linear:     sqrt(β_t) evenly spaced, then squared (Stable Diffusion)
    squaredcos_cap_v2: β_t = 1 - ᾱ(t+1)/ᾱ(t) with ᾱ(t) = cos²((t/T + 0.008)/1.008 · π/2), capped at 0.999
                       (the cosine schedule of Nichol & Dhariwal)
    """
    T = num_train_timesteps
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
    if beta_schedule == "squaredcos_cap_v2":

        def alpha_bar(s):  # s in [0, 1]
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)]
        return torch.tensor(betas, dtype=torch.float32)
    raise ValueError(f"unknown beta_schedule {beta_schedule!r}; choose one of {', '.join(BETA_SCHEDULES)}")


def rescale_zero_terminal_snr(betas):
    """Rescale betas so the last timestep is pure noise (ᾱ_{T-1} = 0, SNR 0), keeping ᾱ_0 unchanged.

    Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed" (2023): shift and scale
    sqrt(ᾱ_t) linearly so its last value is 0 and its first is unchanged, then recover the betas. (T,) -> (T,)
    """
    sqrt_ab = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    alphas_cumprod = sqrt_ab**2
    alphas = torch.cat([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])  # undo the cumprod
    return 1 - alphas


def _broadcast(values, like):
    """Reshape per-sample values (B,) or a scalar () so they broadcast against ``like`` (B, C, H, W)."""
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim)) if values.ndim else values


def denoised_from_output(model_output, x, prediction_type, sigma, alpha=None):
    """The clean sample x_0 the network's output implies: the package's one conversion (σ, α scalars or broadcastable).

    With ``alpha`` (the ᾱ-form latent x = α x_0 + σ ε, α² + σ² = 1; the network saw x itself):
        epsilon: x_0 = (x - σ ε) / α;      v_prediction: x_0 = α x - σ v;       sample: x_0 itself.
    Without (the σ-form latent x = x_0 + σ ε of k-diffusion; the network saw x / sqrt(σ² + 1)):
        epsilon: x_0 = x - σ ε;   v_prediction: x_0 = x / (σ² + 1) - σ v / sqrt(σ² + 1);   sample: x_0 itself.
    Each is written with the operations of the diffusers schedulers of that family, so the numbers agree.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of {', '.join(PREDICTION_TYPES)}")
    if prediction_type == "sample":
        return model_output
    if alpha is None:
        if prediction_type == "epsilon":
            return x - sigma * model_output
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + x / (sigma**2 + 1)
    if prediction_type == "epsilon":
        return (x - sigma * model_output) / alpha
    return alpha * x - sigma * model_output


def x0_from_output(model_output, x_t, alpha_bar, prediction_type):
    """``denoised_from_output`` for the latent x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε, given ᾱ_t."""
    return denoised_from_output(model_output, x_t, prediction_type, (1 - alpha_bar) ** 0.5, alpha_bar**0.5)


def eps_from_output(model_output, x_t, alpha_bar, prediction_type):
    """Predicted noise ε from the network output, given ᾱ_t.

    epsilon: ε;   v_prediction: ε = sqrt(ᾱ) v + sqrt(1-ᾱ) x_t;   sample: ε = (x_t - sqrt(ᾱ) x_0) / sqrt(1-ᾱ).
    """
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return alpha_bar**0.5 * model_output + (1 - alpha_bar) ** 0.5 * x_t
    if prediction_type == "sample":
        return (x_t - alpha_bar**0.5 * model_output) / (1 - alpha_bar) ** 0.5
    raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of {', '.join(PREDICTION_TYPES)}")


@dataclass
class NoiseSchedule:
    """The forward process q(x_t | x_0) for t = 0..T-1, defined by its betas (T,)."""

    betas: torch.Tensor  # (T,) float32

    @classmethod
    def from_config(cls, config):
        """Build from any object with diffusers' scheduler fields (a ``SchedulerConfig``, for example)."""
        if config.trained_betas is not None:
            betas = torch.tensor(config.trained_betas, dtype=torch.float32)
        else:
            betas = make_betas(config.beta_schedule, config.num_train_timesteps, config.beta_start, config.beta_end)
        if config.rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        return cls(betas)

    @property
    def num_train_timesteps(self):
        return len(self.betas)

    @property
    def alphas_cumprod(self):
        """ᾱ_t = ∏_{s<=t} (1 - β_s), (T,): the fraction of signal power left at step t."""
        return torch.cumprod(1.0 - self.betas, dim=0)

    @property
    def sigmas(self):
        """σ_t = sqrt((1 - ᾱ_t) / ᾱ_t), (T,): the noise level of x_t / sqrt(ᾱ_t) = x_0 + σ_t ε."""
        ab = self.alphas_cumprod
        return ((1 - ab) / ab) ** 0.5

    @property
    def snr(self):
        """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t) = 1 / σ_t², (T,)."""
        ab = self.alphas_cumprod
        return ab / (1 - ab)

    def _alpha_bar(self, t, like):
        """ᾱ_t in the dtype of ``like``, shaped to broadcast over it; t is an int or a (B,) integer tensor."""
        t = torch.as_tensor(t, device=like.device)
        if t.is_floating_point():
            raise ValueError(f"timesteps must be integers in 0..{self.num_train_timesteps - 1}, got {t.dtype}")
        return _broadcast(self.alphas_cumprod.to(like.device, like.dtype)[t], like)

    def add_noise(self, x0, noise, t):
        """Sample q(x_t | x_0): x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε. x0, noise: (B, ...); t: int or (B,)."""
        ab = self._alpha_bar(t, x0)
        return ab**0.5 * x0 + (1 - ab) ** 0.5 * noise

    def step_forward(self, x_prev, noise, t):
        """Sample one step of the forward chain q(x_t | x_{t-1}) = N(sqrt(1 - β_t) x_{t-1}, β_t I)."""
        t = torch.as_tensor(t, device=x_prev.device)
        beta = _broadcast(self.betas.to(x_prev.device, x_prev.dtype)[t], x_prev)
        return (1 - beta) ** 0.5 * x_prev + beta**0.5 * noise

    def target(self, x0, noise, t, prediction_type):
        """The training target for x_t = add_noise(x0, noise, t): ε, v = sqrt(ᾱ) ε - sqrt(1-ᾱ) x_0, or x_0."""
        if prediction_type == "epsilon":
            return noise
        if prediction_type == "v_prediction":
            ab = self._alpha_bar(t, x0)
            return ab**0.5 * noise - (1 - ab) ** 0.5 * x0
        if prediction_type == "sample":
            return x0
        raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of {', '.join(PREDICTION_TYPES)}")

    def predicted_x0(self, model_output, x_t, t, prediction_type):
        """x_0 implied by the network output at step t (see ``x0_from_output``). Shapes as x_t."""
        return x0_from_output(model_output, x_t, self._alpha_bar(t, x_t), prediction_type)

    def predicted_eps(self, model_output, x_t, t, prediction_type):
        """ε implied by the network output at step t (see ``eps_from_output``). Shapes as x_t."""
        return eps_from_output(model_output, x_t, self._alpha_bar(t, x_t), prediction_type)
