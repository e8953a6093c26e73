"""Per time window, what the model was asked against what it was validated on.

The reference is what the export stored about its validation split (`assets.extra/keras_med.json`):
the guard's pass rate (so `1 - pass rate` of in-scope images are expected to be flagged), the
model's top-class counts and mean top probability there, and the sets' mean size. Per window:
- requests, and invalid inputs by reason;
- the out-of-distribution rate among valid inputs, with a one-sided binomial test against the
  expected rate (scipy.stats.binomtest);
- the mix of top classes against validation's: a chi-square test (scipy.stats.chisquare) and the
  population stability index, PSI = sum((o - e) ln(o / e)) over the class shares;
- the mean top probability and the mean conformal set size.
A window raises an alert when its OOD rate is above `alert_ood` and significantly above the
expected rate (p < 0.05), or its PSI is above `alert_psi` with at least `min_requests` answers
(the PSI of a handful of requests is noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

WINDOWS = {"hour": "h", "day": "D", "week": "W"}
# Shares are floored here before the PSI's logarithm: a class never predicted in a window (or in
# validation) would otherwise make it infinite.
PSI_FLOOR = 1e-4
SIGNIFICANCE = 0.05


@dataclass
class Reference:
    """What the export says about its validation split."""

    class_names: list[str]
    expected_ood_rate: float | None
    class_shares: np.ndarray | None
    mean_top_probability: float | None
    mean_set_size: float | None

    @classmethod
    def from_metadata(cls, metadata: dict) -> "Reference":
        ood, sets = metadata.get("ood") or {}, metadata.get("conformal") or {}
        reference = ood.get("reference") or {}
        counts = reference.get("top_class_counts")
        shares = np.asarray(counts, np.float64) / max(1, sum(counts)) if counts else None
        rate = ood.get("validation_pass_rate")
        return cls(list(metadata.get("class_names", [])), None if rate is None else 1.0 - float(rate), shares,
                   reference.get("mean_top_probability"), sets.get("mean_set_size"))


def psi(observed_shares: np.ndarray, expected_shares: np.ndarray) -> float:
    """The population stability index of two distributions over the same classes."""
    observed = np.maximum(np.asarray(observed_shares, np.float64), PSI_FLOOR)
    expected = np.maximum(np.asarray(expected_shares, np.float64), PSI_FLOOR)
    return float(np.sum((observed - expected) * np.log(observed / expected)))


def window_rows(table: pd.DataFrame, reference: Reference, window: str = "day", alert_ood: float = 0.15,
                alert_psi: float = 0.2, min_requests: int = 30) -> list[dict]:
    """One dict of figures per time window that has requests, in time order (see the module docstring)."""
    from scipy.stats import binomtest, chisquare

    if window not in WINDOWS:
        raise ValueError(f"window must be one of {list(WINDOWS)}, got {window!r}")
    if table.empty:
        return []
    times = table["time"].dt.tz_convert("UTC").dt.tz_localize(None)
    starts = times.dt.to_period(WINDOWS[window]).dt.start_time
    rows = []
    for start, part in table.groupby(starts.values, sort=True):
        valid = part[part["valid"]]
        row = {"window": pd.Timestamp(start).isoformat(), "requests": int(len(part)), "valid": int(len(valid)),
               "invalid_by_reason": {str(k): int(v) for k, v in part.loc[~part["valid"], "reason"].value_counts().items()}}
        guarded = valid[valid["in_distribution"].notna()]
        flagged = int((guarded["in_distribution"] == False).sum())  # noqa: E712 (a column of objects)
        row["ood_rate"] = flagged / len(guarded) if len(guarded) else None
        row["ood_p_value"] = None
        if len(guarded) and reference.expected_ood_rate is not None:
            row["ood_p_value"] = float(binomtest(flagged, len(guarded), min(max(reference.expected_ood_rate, 1e-9),
                                                                            1.0), alternative="greater").pvalue)
        counts = np.array([(valid["top_class"] == name).sum() for name in reference.class_names], np.float64)
        row["class_counts"] = {name: int(count) for name, count in zip(reference.class_names, counts)}
        row["psi"] = row["chi2_p_value"] = None
        if reference.class_shares is not None and counts.sum():
            row["psi"] = psi(counts / counts.sum(), reference.class_shares)
            expected = np.maximum(reference.class_shares, PSI_FLOOR)
            row["chi2_p_value"] = float(chisquare(counts, expected / expected.sum() * counts.sum()).pvalue)
        row["mean_top_probability"] = _mean(valid["top_probability"])
        row["mean_set_size"] = _mean(valid["set_size"])
        alerts = []
        if row["ood_rate"] is not None and row["ood_rate"] > alert_ood and (row["ood_p_value"] is None
                                                                             or row["ood_p_value"] < SIGNIFICANCE):
            alerts.append(f"out-of-distribution rate {row['ood_rate']:.1%} > {alert_ood:.0%}")
        if row["psi"] is not None and row["psi"] > alert_psi and len(valid) >= min_requests:
            alerts.append(f"class-mix PSI {row['psi']:.2f} > {alert_psi:g}")
        row["alerts"] = alerts
        rows.append(row)
    return rows


def _mean(values: pd.Series) -> float | None:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.mean()) if len(values) else None
