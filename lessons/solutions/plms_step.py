"""Reference solution of lessons/exercises/plms_step.py (lesson 3)."""

import torch


def plms_step(x, eps_history, alpha_bar, alpha_bar_prev):
    """ε' = (55 ε_0 - 59 ε_1 + 37 ε_2 - 9 ε_3) / 24, then the transfer of PNDM's eq. (9). Shapes as x."""
    e0, e1, e2, e3 = eps_history
    eps = (55 * e0 - 59 * e1 + 37 * e2 - 9 * e3) / 24
    a, a_prev = alpha_bar, alpha_bar_prev
    denominator = a * (1 - a_prev).sqrt() + (a * (1 - a) * a_prev).sqrt()
    return (a_prev / a).sqrt() * x - (a_prev - a) * eps / denominator
