"""Several seeds of one run: per-seed metrics and their mean with a 95% confidence interval.

For n >= 2 seeds the interval is mean +- t_{0.975, n-1} s / sqrt(n), s the sample
standard deviation (Student's t, as the seeds are few); with one seed there is none.
The quantile t_{0.975, df} is scipy's `stats.t.ppf(0.975, df)`, copied as exact float
literals for df 1..100 (so every interval equals scipy's to the bit); beyond that the
Cornish-Fisher expansion in 1/df, within 4e-11 of scipy (tests/test_aggregate.py).
"""

from __future__ import annotations

import math

# T975[df - 1] = float(scipy.stats.t.ppf(0.975, df)), df = 1..100
# fmt: off
T975 = (
    12.706204736174694, 4.302652729749462, 3.1824463052837078, 2.7764451051977934,
    2.5705818356363146, 2.4469118511449786, 2.364624251592784, 2.306004135204166,
    2.262157162798205, 2.228138851986274, 2.200985160091639, 2.1788128296672284,
    2.1603686564627913, 2.144786687917804, 2.131449545559776, 2.1199052992212546,
    2.1098155778333156, 2.1009220402410382, 2.0930240544083087, 2.085963447265864,
    2.0796138447276795, 2.0738730679040254, 2.0686576104190486, 2.0638985616280245,
    2.0595385527532972, 2.0555294386428735, 2.0518305164802846, 2.0484071417952454,
    2.045229642132703, 2.0422724563012378, 2.039513446396408, 2.0369333434601016,
    2.0345152974493383, 2.0322445093177186, 2.030107928250343, 2.0280940009804502,
    2.0261924630291093, 2.0243941639119694, 2.022690920036761, 2.021075390306273,
    2.019540970441376, 2.0180817028184443, 2.016692199227824, 2.0153675744437636,
    2.014103388880846, 2.012895598919429, 2.0117405137297655, 2.010634757624232,
    2.0095752371292392, 2.008559112100761, 2.007583770315836, 2.006646805061688,
    2.0057459953178687, 2.0048792881880564, 2.0040447832891455, 2.003240718847872,
    2.002465459291007, 2.0017174841452356, 2.000995378088267, 2.0002978220142604,
    1.999623584994939, 1.9989715170333788, 1.998340542520741, 1.997729654317693,
    1.9971379083920038, 1.9965644189523117, 1.996008354025296, 1.9954689314298435,
    1.9949454151072374, 1.994437111771186, 1.9939433678456255, 1.9934635666618719,
    1.992997125889855, 1.992543495180932, 1.9921021540022417, 1.9916726096446642,
    1.9912543953883846, 1.9908470688116906, 1.9904502102301285, 1.990063421254446,
    1.9896863234569029, 1.989318557136572, 1.9889597801751624, 1.9886096669757083,
    1.9882679074772216, 1.98793420623902, 1.9876082815890708, 1.9872898648311692,
    1.986978699506281, 1.9866745407037683, 1.9863771544186177, 1.98608631695113,
    1.9858018143458227, 1.985523441866604, 1.9852510035054978, 1.984984311522457,
    1.9847231860139845, 1.9844674545084815, 1.9842169515864174, 1.9839715185235518,
)
# fmt: on
Z975 = 1.959963984540054  # scipy.stats.norm.ppf(0.975)


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` >= 1 degrees of freedom."""
    if df < 1:
        raise ValueError(f"t975: df must be >= 1 (got {df})")
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def ci95_half_width(values: list[float]) -> float:
    """Half-width of the 95% t-interval of the mean of `values` (n >= 2)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return t975(n - 1) * sd / math.sqrt(n)


def summarize(per_seed: dict[int, dict[str, float]]) -> dict:
    """{"n_seeds", "seeds": {seed: metrics}, "mean": {...}, "ci95": {...}} over the
    numeric metrics every seed has; "ci95" only with >= 2 seeds."""
    seeds = list(per_seed)
    keys = [
        k
        for k, v in per_seed[seeds[0]].items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and all(k in per_seed[s] for s in seeds)
    ]
    out = {
        "n_seeds": len(seeds),
        "seeds": {str(s): per_seed[s] for s in seeds},
        "mean": {k: sum(per_seed[s][k] for s in seeds) / len(seeds) for k in keys},
    }
    if len(seeds) >= 2:
        out["ci95"] = {k: ci95_half_width([per_seed[s][k] for s in seeds]) for k in keys}
    return out
