import math

import numpy as np
import pytest

from llmpo.stats.bernoulli import (
    kl_bernoulli,
    kl_bernoulli_scalar,
    kl_confidence,
    kl_lower,
    kl_upper,
)


@pytest.mark.parametrize(
    ("p", "expected"), [(0.55, 0.00501), (0.6, 0.02014), (0.8, 0.19274), (0.9, 0.36806)]
)
def test_kl_to_half_matches_design_table(p, expected):
    assert kl_bernoulli(p, 0.5) == pytest.approx(expected, abs=5e-6)
    assert kl_bernoulli_scalar(p, 0.5) == pytest.approx(expected, abs=5e-6)


def test_kl_matches_definition_and_edges():
    rng = np.random.default_rng(0)
    p, q = rng.uniform(0.01, 0.99, size=(2, 100))
    direct = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    np.testing.assert_allclose(kl_bernoulli(p, q), direct, rtol=1e-9)
    for a, b in zip(p, q, strict=True):
        assert kl_bernoulli_scalar(a, b) == pytest.approx(kl_bernoulli(a, b), rel=1e-12)
    assert kl_bernoulli(0.0, 0.5) == pytest.approx(math.log(2))
    assert kl_bernoulli(1.0, 0.5) == pytest.approx(math.log(2))
    assert kl_bernoulli(0.3, 0.3) == 0.0
    assert np.isfinite(kl_bernoulli(0.5, 0.0))


def test_kl_inverses_hit_the_level():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.95, size=50)
    level = rng.uniform(0.001, 0.2, size=50)
    upper = kl_upper(p, level)
    lower = kl_lower(p, level)
    assert np.all(upper >= p) and np.all(lower <= p)
    inside_up = upper < 1 - 1e-9
    inside_low = lower > 1e-9
    np.testing.assert_allclose(kl_bernoulli(p, upper)[inside_up], level[inside_up], rtol=1e-8)
    np.testing.assert_allclose(kl_bernoulli(p, lower)[inside_low], level[inside_low], rtol=1e-8)
    with pytest.raises(ValueError, match="non-negative"):
        kl_upper(0.5, -1.0)


def test_kl_confidence():
    assert kl_confidence(0.01) == pytest.approx(0.01 * math.log(0.01 / 0.99) + 0.99 * math.log(99))
    assert kl_confidence(1e-6) / math.log(1e6) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="delta"):
        kl_confidence(0.7)
