"""Bootstrap inference (insta.report.stats) against independent implementations: a plain-Python percentile
bootstrap on the same draws, and scipy.stats.bootstrap's BCa (its own draws, so agreement within Monte-Carlo
error) for one sample, for a paired statistic of example indices, and for the report's average over targets."""
import random

import numpy as np
import pytest

from insta.report.stats import (
    bca_levels,
    bootstrap_mean_ci,
    bootstrap_p_value,
    interval,
    jackknife_indices,
    percentile_interval,
    resample_indices,
)


def _by_index(f):
    """A scipy ``vectorized`` statistic of example-index arrays of any leading shape, from one on 2-d rows."""
    def stat(*idx, axis=-1):
        shape = np.broadcast_shapes(*[i.shape[:-1] for i in idx])
        rows = [np.broadcast_to(i, (*shape, i.shape[-1])).reshape(-1, i.shape[-1]) for i in idx]
        return f(*rows).reshape(shape)
    return stat


def test_percentile_interval_and_p_value_equal_a_plain_loop_on_the_same_draws():
    rng = random.Random(5)
    a = [float(rng.random() < 0.7) for _ in range(45)]
    b = [float(rng.random() < 0.5) for _ in range(45)]
    idx = resample_indices(45, 3000, np.random.default_rng(11))
    d = np.asarray(a) - np.asarray(b)
    boots = d[idx].mean(axis=1)
    loop = sorted(sum(a[j] - b[j] for j in row) / 45 for row in idx.tolist())

    def quantile(q):  # numpy's default (linear) rule, written out
        pos = q * (len(loop) - 1)
        lo = int(pos)
        return loop[lo] + (loop[min(lo + 1, len(loop) - 1)] - loop[lo]) * (pos - lo)

    low, high = percentile_interval(boots, 0.95)
    assert low == pytest.approx(quantile(0.025), abs=1e-12) and high == pytest.approx(quantile(0.975), abs=1e-12)
    share_le = sum(x <= 0 for x in loop) / len(loop)
    share_ge = sum(x >= 0 for x in loop) / len(loop)
    assert bootstrap_p_value(boots) == pytest.approx(min(1.0, 2 * min(share_le, share_ge)))


def test_jackknife_rows_leave_one_out():
    rows = jackknife_indices(4)
    assert rows.tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]


def test_bca_matches_scipy_on_a_skewed_mean():
    import scipy.stats as scipy_stats
    x = np.random.default_rng(0).exponential(size=40)
    boots = x[resample_indices(40, 40000, np.random.default_rng(1))].mean(axis=1)
    ours = interval(boots, float(x.mean()), 0.95, "bca", [x[jackknife_indices(40)].mean(axis=1)])
    ref = scipy_stats.bootstrap((x,), np.mean, method="BCa", n_resamples=40000, rng=np.random.default_rng(2))
    assert ours["low"] == pytest.approx(ref.confidence_interval.low, abs=0.012)
    assert ours["high"] == pytest.approx(ref.confidence_interval.high, abs=0.012)
    pct = percentile_interval(boots)
    assert ours["high"] - pct[1] > 0.01  # right-skewed: BCa moves the interval up, as scipy does


def test_bca_of_a_paired_balanced_accuracy_difference_matches_scipy():
    """The report's kind of statistic: two methods scored on the same resampled examples."""
    import scipy.stats as scipy_stats
    from insta.metrics import balanced_accuracy_of

    rng = np.random.default_rng(4)
    golds = rng.choice(["A", "B", "C"], size=50, p=[0.5, 0.3, 0.2])
    ca = (rng.random(50) < 0.65).astype(float)
    cb = (rng.random(50) < 0.45).astype(float)

    def diff(idx):
        return balanced_accuracy_of(ca, golds, idx) - balanced_accuracy_of(cb, golds, idx)

    est = float(balanced_accuracy_of(ca, golds) - balanced_accuracy_of(cb, golds))
    boots = diff(resample_indices(50, 30000, np.random.default_rng(5)))
    ours = interval(boots, est, 0.95, "bca", [diff(jackknife_indices(50))])
    ref = scipy_stats.bootstrap((np.arange(50),), _by_index(diff), vectorized=True, method="BCa",
                                n_resamples=30000, rng=np.random.default_rng(6)).confidence_interval
    assert "interval_note" not in ours
    assert ours["low"] == pytest.approx(ref.low, abs=0.01) and ours["high"] == pytest.approx(ref.high, abs=0.01)


def test_bca_average_over_targets_matches_scipy_stratified():
    """summarize(interval="bca"): the average over targets resamples each target on its own (scipy: one sample per
    target, unpaired) and takes the acceleration over all targets' jackknife values."""
    import scipy.stats as scipy_stats
    from test_report import fake_results

    from insta.report import metric_on, summarize

    res = fake_results(40)
    res["config"]["report"].update({"bootstrap": 20000, "interval": "bca"})
    summ = summarize(res)
    assert summ["interval"] == "bca"
    row = next(c for c in summ["comparisons"] if (c["method"], c["baseline"]) == ("insta-mean", "all"))["average"]
    cells = {(c["target"], c["label"]): res["samples"][c["eval_key"]] for c in res["cells"]}
    tids = [t["id"] for t in res["targets"]]

    def diff(tid):
        m = summ["primary"][tid]
        return lambda idx: metric_on(cells[(tid, "insta-mean")], m, idx) - metric_on(cells[(tid, "all")], m, idx)

    stat = _by_index(lambda i1, i2: (diff(tids[0])(i1) + diff(tids[1])(i2)) / 2)
    ref = scipy_stats.bootstrap((np.arange(40), np.arange(40)), stat, vectorized=True, paired=False,
                                method="BCa", n_resamples=20000, rng=np.random.default_rng(9)).confidence_interval
    assert row["low"] == pytest.approx(ref.low, abs=0.012) and row["high"] == pytest.approx(ref.high, abs=0.012)


def test_bca_falls_back_to_percentile_where_undefined():
    same = np.full(500, 0.25)
    out = interval(same, 0.25, 0.95, "bca", [np.full(10, 0.25)])
    assert (out["low"], out["high"]) == (0.25, 0.25) and "every resample gives the same value" in out["interval_note"]
    assert bca_levels(np.linspace(1, 2, 100), 0.0, [np.arange(5.0)]) == "the estimate lies outside the bootstrap values"
    assert bca_levels(np.linspace(-1, 1, 101), 0.0, [np.zeros(5)]) == "the jackknife values do not vary"
    assert "interval_note" not in interval(same, 0.25)  # percentile: no note
    with pytest.raises(ValueError, match="interval must be one of"):
        interval(same, 0.25, 0.95, "studentized")


def test_bootstrap_mean_ci_keeps_the_transfer_scores_draws():
    """The transfer scores' mean CI over targets: the same draws and quantiles as before it moved here."""
    vals = [0.1, -0.3, 0.25, 0.4, None, float("nan"), 0.05]
    clean = np.asarray([0.1, -0.3, 0.25, 0.4, 0.05])
    means = clean[np.random.default_rng(7).integers(0, 5, size=(1000, 5))].mean(axis=1)
    assert bootstrap_mean_ci(vals, 1000, seed=7) == (float(clean.mean()), float(np.quantile(means, 0.025)),
                                                    float(np.quantile(means, 0.975)))
    mean, low, high = bootstrap_mean_ci(vals, 1000, seed=7, method="bca")
    assert low < mean < high
    assert np.isnan(bootstrap_mean_ci([1.0], 100)[1]) and np.isnan(bootstrap_mean_ci([], 100)[0])


def test_bca_p_value_is_where_the_bca_interval_reaches_zero():
    from insta.report.stats import bca_p_value

    x = np.random.default_rng(12).exponential(size=35) - 0.75
    boots = x[resample_indices(35, 20000, np.random.default_rng(13))].mean(axis=1)
    jack = [x[jackknife_indices(35)].mean(axis=1)]
    p = bca_p_value(boots, float(x.mean()), jack)
    assert 0.001 < p < 0.5
    edge = interval(boots, float(x.mean()), 1 - p, "bca", jack)
    assert min(abs(edge["low"]), abs(edge["high"])) < 0.01  # the (1 - p) interval has zero at one end
    assert interval(boots, float(x.mean()), 0.95, "bca", jack, p_value=True)["p_value"] == p
    assert bca_p_value(np.full(10, 1.0), 1.0, jack) is None  # undefined: the caller falls back to percentile
