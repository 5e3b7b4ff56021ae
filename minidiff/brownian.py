"""A Brownian path drawn from a tree of intervals: the noise of DPM++ SDE, the numbers torchsde draws.

An SDE sampler adds the increment W(t) - W(s) of one Brownian path W for each step [s, t], and increments over
intervals that meet must agree: the steps [s, u] and [u, t] add up to [s, t], whatever order they are asked in.
A Brownian tree makes such a path from one seed. It draws the increment over the whole interval [t0, t1], splits
every interval [a, b] at its halfway point u and draws the left half from the Brownian bridge, given the whole,

    W(u) - W(a) | W(b) - W(a)  ~  N( (u - a)/(b - a) · (W(b) - W(a)),  (u - a)(b - u)/(b - a) ),

the right half being the rest, W(b) - W(u). Each split draws its normal numbers from its own seed, made from the
path's seed and the node's place in the tree (depth, index), so an increment is found by walking down from the
root to the intervals that tile it; nothing depends on the queries made before. Times are known to ``tol``
(rounded to 6 decimals for 1e-6), so the walk ends. These are torchsde's ``BrownianInterval(halfway_tree=True,
tol=1e-6, pool_size=24)`` numbers (Kidger et al. 2021, "Efficient and accurate gradients for neural SDEs"),
which diffusers' ``DPMSolverSDEScheduler`` adds through its ``BrownianTreeNoiseSampler``.
"""

import math

import numpy as np
import torch

from .noise import randn


class BrownianTree:
    """One Brownian path W on [t0, t1] of shape ``shape``, fixed by ``seed``; ``tree(s, t)`` is W(t) - W(s)."""

    def __init__(self, t0, t1, shape, seed, dtype=torch.float32, device="cpu", tol=1e-6, pool_size=24):
        self.shape, self.seed, self.dtype, self.device = tuple(shape), seed, dtype, torch.device(device)
        self.pool_size = pool_size  # words of numpy's seed sequence
        self.ndigits = -int(math.log10(tol))
        self.t0, self.t1 = self.round(t0), self.round(t1)
        # torchsde parity: the root's own seed sequence has no spawn key; its length is the unrounded t1 - t0
        self.W = self.normal(()) * math.sqrt(t1 - t0)  # W(t1) - W(t0) ~ N(0, t1 - t0)

    def round(self, t):
        return round(t, self.ndigits)

    def normal(self, spawn_key):
        """z ~ N(0, I) from the first word of numpy's seed sequence for (seed, spawn_key), a torch seed.

        (torchsde draws more words from it, for Lévy areas, which DPM++ SDE does not use.)"""
        sequence = np.random.SeedSequence(self.seed, spawn_key=spawn_key, pool_size=self.pool_size)
        generator = torch.Generator(self.device).manual_seed(int(sequence.generate_state(1)[0]))
        return randn(self.shape, generator, self.dtype, self.device)

    def __call__(self, s, t):
        """W(t) - W(s) for s <= t, each clamped to [t0, t1]; shape ``shape``."""
        s, t = (min(max(float(time), self.t0), self.t1) for time in (s, t))
        if s > t:
            raise ValueError(f"the interval [{s}, {t}] runs backwards; ask for W(t) - W(s) with s <= t")
        s, t = self.round(s), self.round(t)
        if s == t:
            return torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        pieces = self.pieces(self.t0, self.t1, self.W, depth=0, index=0, s=s, t=t)
        W = pieces[0]
        for piece in pieces[1:]:  # left to right, as torchsde adds them
            W = W + piece
        return W

    def pieces(self, a, b, W_ab, depth, index, s, t):
        """The increments of the tree's intervals that tile [s, t] ⊆ [a, b], left to right, given W(b) - W(a).

        The node [a, b] sits at ``depth``, ``index`` (its children at depth + 1, 2·index and 2·index + 1)."""
        if (s, t) == (a, b):
            return [W_ab]
        u = self.round(0.5 * (b + a))
        # the Brownian bridge, in torchsde's order of operations (so the float rounding is the same)
        mean = (u - a) * W_ab * (1 / (b - a))
        std = math.sqrt((u - a) * (b - u) * (1 / (b - a)))
        W_au = mean + std * self.normal((index, depth))
        W_ub = W_ab - W_au
        left = (a, u, W_au, depth + 1, 2 * index)
        right = (u, b, W_ub, depth + 1, 2 * index + 1)
        if t <= u:
            return self.pieces(*left, s, t)
        if s >= u:
            return self.pieces(*right, s, t)
        return self.pieces(*left, s, u) + self.pieces(*right, u, t)


class BrownianTreeNoise:
    """The noise DPM++ SDE adds between two noise levels, a Brownian path W in σ, normalised to N(0, I):

        z = (W(σ_next) - W(σ)) / sqrt|σ_next - σ|.

    ``x`` (B, ...) gives the shape, dtype and device; the path lives on [sigma_min, sigma_max]. ``seed``: an int
    (one path of x's shape), a list of B ints (one path of shape x.shape[1:] per batch element, as diffusers does),
    or None (a seed drawn from torch's global generator, as diffusers draws it).
    """

    def __init__(self, x, sigma_min, sigma_max, seed=None):
        # diffusers parity: the σ's pass through tensors of torch's default dtype (float32) before the tree sees them
        sigma_min, sigma_max = float(torch.as_tensor(sigma_min)), float(torch.as_tensor(sigma_max))
        if sigma_min > sigma_max:
            raise ValueError(f"sigma_min {sigma_min} exceeds sigma_max {sigma_max}; pass the smallest σ first")
        if seed is None:
            seed = torch.randint(0, 2**63 - 1, []).item()
        self.batched = isinstance(seed, (list, tuple))
        if self.batched and len(seed) != x.shape[0]:
            raise ValueError(f"got {len(seed)} seeds for a batch of {x.shape[0]}; pass one seed per batch element")
        seeds, shape = (seed, x.shape[1:]) if self.batched else ([seed], x.shape)
        self.trees = [BrownianTree(sigma_min, sigma_max, shape, s, x.dtype, x.device) for s in seeds]

    def __call__(self, sigma, sigma_next):
        """z for the step σ -> σ_next (floats or 0-d tensors), shape of x; the same z for the same step, always."""
        sigma, sigma_next = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        low, high = sorted((sigma, sigma_next))
        W = torch.stack([tree(low, high) for tree in self.trees])  # W(high) - W(low): (B, ...) or (1, ...)
        W = W if self.batched else W[0]
        if sigma > sigma_next:  # a step down in σ goes backwards along the path
            W = -W
        return W / (sigma_next - sigma).abs().sqrt()
