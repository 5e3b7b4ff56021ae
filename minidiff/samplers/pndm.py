"""PNDM (Liu et al., 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds"): PLMS, with an optional
Runge–Kutta warm-up, matching diffusers' ``PNDMScheduler``.

PNDM treats the network's ε as the slope of the ODE and moves with the *transfer* φ of the paper's eq. (9), the
DDIM step from timestep t to t' (ᾱ = ᾱ_t, ᾱ' = ᾱ_{t'}; below t' = 0, ᾱ' is 1 if ``set_alpha_to_one`` else ᾱ_0):

    φ(x, ε, t, t') = sqrt(ᾱ'/ᾱ) x - (ᾱ' - ᾱ) ε / (ᾱ sqrt(1 - ᾱ') + sqrt(ᾱ (1 - ᾱ) ᾱ'))

Pseudo linear multistep (PLMS): one network call per step, ε the Adams–Bashforth combination of the ε's of
the last four steps (newest first):   ε' = (55 ε_0 - 59 ε_1 + 37 ε_2 - 9 ε_3) / 24,   x' = φ(x, ε', t, t - T//n).
Fewer are known at the start. With ``skip_prk_steps`` (Stable Diffusion's files) the first step is a second-order
(Heun-like) step: ε_a at x, x̃ = φ(x, ε_a, t, t'), ε_b at x̃, then x' = φ(x, (ε_a + ε_b)/2, t, t'); the second and
third use (3 ε_0 - ε_1)/2 and (23 ε_0 - 16 ε_1 + 5 ε_2)/12. Without it, three pseudo Runge–Kutta steps (PRK) come
first, four calls each, with δ = t - t' and the midpoint t - δ/2:

    e1 = ε(x, t)                             e2 = ε(φ(x, e1, t, t - δ/2), t - δ/2)
    e3 = ε(φ(x, e2, t, t - δ/2), t - δ/2)    e4 = ε(φ(x, e3, t, t'), t')
    x' = φ(x, (e1 + 2 e2 + 2 e3 + e4) / 6, t, t')

and their three e1's start PLMS's history, so it goes on with all four terms.

The network is called once per entry of ``timesteps`` (see ``steps.pndm_plan``); after each call the callback sees
the latent the call produced: a new step's latent, or the point the next call evaluates (x̃ and the Runge–Kutta
stages), as diffusers' ``step`` returns it. With v-prediction the combined output is turned into ε at the step's start.
"""

from ..schedule import eps_from_output, x0_from_output
from .base import Sampler
from .steps import pndm_plan


def adams_bashforth(eps):
    """The linear multistep ε from a newest-first history of 1 to 4 ε's (written as diffusers writes it, so
    half-precision runs round alike)."""
    if len(eps) == 1:
        return eps[0]
    if len(eps) == 2:
        return (3 * eps[0] - eps[1]) / 2
    if len(eps) == 3:
        return (23 * eps[0] - 16 * eps[1] + 5 * eps[2]) / 12
    return (1 / 24) * (55 * eps[0] - 59 * eps[1] + 37 * eps[2] - 9 * eps[3])


class PNDMSampler(Sampler):
    name = "pndm"
    diffusers_class = "PNDMScheduler"
    defaults = {"timestep_spacing": "leading"}
    # diffusers parity: PNDMScheduler.order is 1 though a warm-up step calls the network 2 or 4 times, so img2img
    # skips steps - int(steps · strength) *entries* of the call list, and may start inside a warm-up step
    order = 1
    supports_zero_snr = False  # PNDMScheduler has no rescale_betas_zero_snr

    def __init__(self, config, steps, **options):
        if config.prediction_type == "sample":
            raise ValueError("the pndm sampler needs prediction_type 'epsilon' or 'v_prediction' (as diffusers' "
                             "PNDMScheduler); for 'sample' use ddim or euler")
        super().__init__(config, steps, **options)

    def plan(self):
        runge_kutta = not self.config.skip_prk_steps
        if runge_kutta and self.steps < 4:
            raise ValueError(f"pndm with skip_prk_steps false takes 3 Runge–Kutta steps and at least one more; "
                             f"use steps >= 4 (got {self.steps}) or skip_prk_steps true")
        return pndm_plan(self.config, self.steps, runge_kutta)

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise (std 1); returns the sampled x_0. Deterministic. Call i is diffusers' counter i."""
        config = self.config
        ab = self.schedule.alphas_cumprod  # float32, like diffusers: the scalars below stay float32
        final_ab = ab.new_tensor(1.0) if config.set_alpha_to_one else ab[0]
        k = config.num_train_timesteps // self.steps  # the step T // n, also where spacing is not leading
        runge_kutta_calls = 0 if config.skip_prk_steps else 12

        def transfer(x, output, t, t_prev):  # φ(x, ε, t, t') of eq. (9)
            a, a_prev = ab[t], ab[t_prev] if t_prev >= 0 else final_ab
            # diffusers parity: with v-prediction the outputs are combined as v's, and the combination becomes ε
            # with the x and ᾱ of the step's start (not the x each v was computed at)
            eps = eps_from_output(output, x, a, config.prediction_type)
            denominator = a * (1 - a_prev) ** 0.5 + (a * (1 - a) * a_prev) ** 0.5
            return (a_prev / a) ** 0.5 * x - (a_prev - a) * eps / denominator

        history = []  # the ε of each step's first call, newest last (diffusers' `ets`)
        for i, t in enumerate(self.timesteps):
            output = model_fn(x, t)
            if i < runge_kutta_calls:
                stage = i % 4
                # diffusers parity: the step starts at entry i - i % 4 of the whole list, even after img2img's late
                # start, and stages 0 and 2 aim at this call's timestep minus (T // n) // 2, whatever the spacing
                t_step, target = self.all_timesteps[i - stage], t - (k // 2 if stage % 2 == 0 else 0)
                if stage == 0:
                    x_step, history, combined = x, history + [output], 1 / 6 * output
                    x_next = transfer(x_step, output, t_step, target)
                elif stage < 3:
                    combined = combined + 1 / 3 * output
                    x_next = transfer(x_step, output, t_step, target)
                else:  # (e1 + 2 e2 + 2 e3 + e4) / 6
                    x_next = transfer(x_step, combined + 1 / 6 * output, t_step, target)
            elif i == 1 and not runge_kutta_calls:
                # the warm-up's second call, at t' (twice in the list); diffusers parity: it redoes the step from
                # t' + T // n, which is the step's start only with leading spacing and not when img2img starts on t'
                x_next = transfer(x_step, (output + history[-1]) / 2, t + k, t)
            else:
                history = (history + [output])[-4:]
                if i == 0:
                    x_step = x  # the start the warm-up's second call goes back to
                # diffusers parity: the step goes to t - T // n, not to the list's next timestep (trailing, linspace)
                x_next = transfer(x, adams_bashforth(history[::-1]), t, t - k)
            x0 = x0_from_output(output, x, ab[t], config.prediction_type)  # what this call's output says of x_0
            x = self.report(callback, i, t, x_next, x0)
        return x
