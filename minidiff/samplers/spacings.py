"""Re-spacing the noise levels: where between σ_max and σ_min a sampler's σ's lie, and the timestep of each.

A plan (steps.py) first takes the σ's at its spaced timesteps; a re-spacing keeps only their two ends and puts n
σ's between them anew:

* *karras* (Karras et al. 2022): evenly spaced in σ^(1/ρ), ρ = 7, so more steps fall at low noise;
* *exponential*: evenly spaced in log σ, every step removing the same fraction of the noise;
* *beta* (Lee et al. 2024): at the quantiles of a Beta(0.6, 0.6) distribution, crowded at both ends.

The network is then called at the fractional training timestep of each σ (``sigma_to_t``).
"""

import numpy as np

from .beta_quantile import beta_quantile

SIGMA_SPACINGS = ("karras", "exponential", "beta")


def karras_sigmas(sigma_min, sigma_max, n, rho=7.0):
    """Karras et al. (2022) noise levels: evenly spaced in σ^(1/ρ) from σ_max down to σ_min. (n,) float64."""
    ramp = np.linspace(0, 1, n)
    max_inv_rho, min_inv_rho = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def exponential_sigmas(sigma_min, sigma_max, n):
    """Noise levels evenly spaced in log σ from σ_max down to σ_min. (n,) float64."""
    return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), n))


def beta_sigmas(sigma_min, sigma_max, n, alpha=0.6, beta=0.6):
    """Noise levels at the quantiles 1, ..., 0 of a Beta(α, β) distribution, scaled to [σ_min, σ_max]. (n,) float64.

    σ_i = σ_min + F⁻¹(1 - i/(n-1)) (σ_max - σ_min), F the Beta CDF; with α = β = 0.6 the steps crowd both ends."""
    return np.array([sigma_min + beta_quantile(q, alpha, beta) * (sigma_max - sigma_min)
                     for q in 1 - np.linspace(0, 1, n)])


RESPACINGS = {"karras": karras_sigmas, "exponential": exponential_sigmas, "beta": beta_sigmas}


def sigma_to_t(sigmas, log_train_sigmas):
    """The fractional training timestep of each σ: interpolate linearly in log σ between neighbouring steps.

    sigmas: (n,) float64 (or float32, then computed in float32); log_train_sigmas: (T,) increasing log σ_t.
    Returns (n,) in the dtype of the arithmetic.
    """
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    # last training step whose log σ is <= log_sigma (0 if none), kept one below the end so `high` exists
    low = (np.searchsorted(log_train_sigmas, log_sigma, side="right") - 1).clip(0, len(log_train_sigmas) - 2)
    high = low + 1
    w = (log_train_sigmas[low] - log_sigma) / (log_train_sigmas[low] - log_train_sigmas[high])
    w = np.clip(w, 0, 1)
    return (1 - w) * low.astype(w.dtype) + w * high.astype(w.dtype)
