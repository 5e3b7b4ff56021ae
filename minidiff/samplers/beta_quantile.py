"""The quantile function of the Beta distribution, for the "beta" σ spacing (no scipy at run time).

The Beta(a, b) CDF is the regularized incomplete beta function

    I_x(a, b) = B(x; a, b) / B(a, b),      B(x; a, b) = ∫_0^x u^(a-1) (1-u)^(b-1) du

evaluated with its continued fraction (Lentz's method), which converges fast for x < (a+1)/(a+b+2); above that
the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) is used. The quantile F⁻¹(q) is found by bisection to the last bit of a
float64, so it agrees with scipy.stats.beta.ppf to rounding.
"""

import math


def _continued_fraction(x, a, b, tiny=1e-300, tol=1e-16, max_terms=500):
    """The continued fraction of I_x(a, b) · a B(a, b) / (x^a (1-x)^b): 1 / (1 + d_1 / (1 + d_2 / (1 + ...)))."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, max_terms):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),  # the even term d_2m
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):  # the odd term d_2m+1
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < tol:
            break
    return result


def beta_cdf(x, a, b):
    """I_x(a, b), the probability that a Beta(a, b) variable is at most x."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _continued_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _continued_fraction(1 - x, b, a) / b


def beta_quantile(q, a, b):
    """F⁻¹(q): the x in [0, 1] with I_x(a, b) = q, by bisection until the interval is one float64 wide."""
    if q <= 0:
        return 0.0
    if q >= 1:
        return 1.0
    low, high = 0.0, 1.0
    while True:
        middle = (low + high) / 2
        if middle in (low, high):
            return middle
        if beta_cdf(middle, a, b) < q:
            low = middle
        else:
            high = middle
