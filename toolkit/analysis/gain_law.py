"""The gain law (issue #33): a small, interpretable model of active learning's gain from the
representation measures, its out-of-sample evaluation, and the tables the interventions make.

- `GainLaw`: gain = offset + amplitude * sigmoid(index), the index linear in one or two
  measures (for one measure: (x - location) / scale), fitted by least squares (scipy); or an
  isotonic curve in one measure (scikit-learn). Prediction intervals from a bootstrap over tasks.
- `leave_task_out`, `prediction_scores`, `evaluate_law`: Pearson, Spearman and R^2 of predicted
  against measured gain, with percentile bootstrap CIs that resample whole tasks.
- `partial_correlation(s)`: the gain against each measure, controlling for the full-data
  probe's error (Mussmann & Liang's quantity, `analysis.dose.full_data_error`).
- `representation_table`, `gain_by_representation`, `phase_table`, `matched_comparison`: the
  interventions' tables (one row per representation x task; `experiments.interventions` runs them).

Pure functions of tables (no cache, no torch): the runners measure, this module fits and scores.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from toolkit.analysis.dose import MEASURES, correlate, dose_row
from toolkit.errors import ConfigError, RecordError
from toolkit.metrics import GAIN, bounds_for, mean_ci
from toolkit.record import RunRecord

LAW_KINDS = ("logistic", "isotonic")
# every measure a law may read: the dose study's, and the full-data probe's errors (added for this issue)
LAW_MEASURES = (*MEASURES, "full_error", "full_worst_group_error")
SCORE_COLUMNS = ("evaluation", "rows", "clusters", "pearson", "pearson_low", "pearson_high", "spearman",
                 "spearman_low", "spearman_high", "r2", "r2_low", "r2_high")
MIN_ROWS = 3  # a correlation or an R^2 over fewer rows is not an estimate


# ---- the law ------------------------------------------------------------------------------------

class GainLaw:
    """The gain as a curve in one or two representation measures, fitted on backbone x task rows.

    kind "logistic": `gain = offset + amplitude * sigmoid(b0 + b . z)`, z the measures
    standardised on the fit rows; with one measure that is a sigmoid in x with a fitted
    location (where the gain is halfway) and scale (its width). Least squares
    (`scipy.optimize.least_squares`, a few starts along the measure's range; slopes bounded so
    a step stays a finite curve). kind "isotonic": a monotone curve in one measure
    (`sklearn.isotonic.IsotonicRegression`, direction chosen from the data, flat past the ends).

    Prediction intervals: the law is refitted on `n_boot` resamples of the tasks, and each
    refit's prediction plus a residual of the full fit drawn at random gives the spread of a
    new row's gain (both the curve's uncertainty and the rows' scatter around it).

    Args:
        measures: one or two columns of the rows (`LAW_MEASURES`, e.g. "sep_label").
        kind: "logistic" or "isotonic" (one measure).
        target: the column predicted (default "auc_gain").
        n_boot: bootstrap refits over tasks for the intervals (0: residuals only).
        level: the intervals' coverage (default 0.9).
        random_state: the bootstrap's and the residual draws' seed.

    Attributes:
        params_: the fitted parameters (logistic: offset, amplitude, b0, b, and the measures'
            mean and std; with one measure also location and scale in its units; isotonic:
            the curve's knots).
        residuals_: measured minus fitted gain on the fit rows.
        boot_params_: the bootstrap refits' parameters.
        n_rows_, n_clusters_: the fit's rows and tasks.

    Examples:
        >>> x = np.linspace(0.5, 1.0, 60)
        >>> rows = pd.DataFrame({"task": np.arange(60) % 6, "sep_label": x,
        ...                      "auc_gain": -0.02 + 0.2 / (1 + np.exp(-(x - 0.8) / 0.03))})
        >>> law = GainLaw(("sep_label",), n_boot=20).fit(rows)
        >>> round(law.params_["location"], 3), round(law.params_["scale"], 3), round(law.params_["amplitude"], 3)
        (0.8, 0.03, 0.2)
        >>> law.predict(pd.DataFrame({"sep_label": [0.5, 1.0]})).round(3).tolist()
        [-0.02, 0.18]
    """

    def __init__(self, measures: tuple[str, ...] | list[str] = ("sep_label",), *, kind: str = "logistic",
                 target: str = "auc_gain", n_boot: int = 200, level: float = 0.9, random_state: int = 0) -> None:
        self.measures, self.kind, self.target = tuple(measures), kind, target
        self.n_boot, self.level, self.random_state = n_boot, level, random_state

    def fit(self, table: pd.DataFrame, *, cluster: str = "task") -> "GainLaw":
        """Fit on the rows of `table` with the measures and the target known; bootstrap over `cluster`.

        Args:
            table: one row per backbone x task (e.g. `analysis.dose.dose_table`).
            cluster: the column whose values the bootstrap resamples (default "task").
        """
        self._check()
        data = _rows(table, [*self.measures, self.target], cluster)
        X, y = data[list(self.measures)].to_numpy(float), data[self.target].to_numpy(float)
        self.params_ = _fit(self.kind, X, y)
        self.residuals_ = y - _predict(self.params_, X)
        self.n_rows_, self.n_clusters_ = len(data), int(data[cluster].nunique())
        rng = np.random.default_rng(self.random_state)
        groups = [g.index.to_numpy() for _, g in data.reset_index(drop=True).groupby(cluster)]
        self.boot_params_ = []
        for _ in range(self.n_boot if len(groups) > 1 else 0):
            pick = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
            if np.ptp(X[pick], axis=0).min() > 0:  # a resample with one value of a measure fits no curve
                self.boot_params_.append(_fit(self.kind, X[pick], y[pick], start=self.params_))
        return self

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        """The law's gain for each row of `table` (NaN where a measure is missing).

        Args:
            table: rows with the law's measures.
        """
        return _predict(self._fitted(), _measures(table, self.measures))

    def predict_interval(self, table: pd.DataFrame) -> pd.DataFrame:
        """The predicted gain of each row with a `level` interval for one new backbone x task.

        Args:
            table: rows with the law's measures.

        Returns:
            A DataFrame with columns predicted, low and high, in the rows' order.
        """
        X = _measures(table, self.measures)
        pred = _predict(self._fitted(), X)
        rng = np.random.default_rng(self.random_state + 1)
        curves = np.array([_predict(p, X) for p in self.boot_params_]) if self.boot_params_ else pred[None, :]
        draws = curves[rng.integers(0, len(curves), 2000)] + rng.choice(self.residuals_, (2000, len(pred)))
        alpha = (1 - self.level) / 2
        return pd.DataFrame({"predicted": pred, "low": np.quantile(draws, alpha, axis=0),
                             "high": np.quantile(draws, 1 - alpha, axis=0)}, index=table.index)

    def describe(self) -> str:
        """The fitted curve as one line of text.

        Examples:
            >>> rows = pd.DataFrame({"task": [0, 1, 2], "sep_label": [0.5, 0.7, 0.9], "auc_gain": [0.0, 0.05, 0.1]})
            >>> GainLaw(("sep_label",), kind="isotonic", n_boot=0).fit(rows).describe()
            'auc_gain = isotonic(sep_label), 3 knots on [0.500, 0.900], fitted on 3 rows of 3 tasks'
        """
        p, fit = self._fitted(), f"fitted on {self.n_rows_} rows of {self.n_clusters_} tasks"
        if self.kind == "isotonic":
            x = p["x"]
            return f"{self.target} = isotonic({self.measures[0]}), {len(x)} knots on [{x[0]:.3f}, {x[-1]:.3f}], {fit}"
        if len(self.measures) == 1:
            return (f"{self.target} = {p['offset']:+.3f} + {p['amplitude']:.3f} * sigmoid(({self.measures[0]} - "
                    f"{p['location']:.3f}) / {p['scale']:.4f}), {fit}")
        terms = " + ".join(f"{b:+.2f} * z({m})" for b, m in zip(p["b"], self.measures))
        return f"{self.target} = {p['offset']:+.3f} + {p['amplitude']:.3f} * sigmoid({p['b0']:+.2f} {terms}), {fit}"

    def to_dict(self) -> dict:
        """The law's settings and fitted parameters, as JSON-ready data (`from_dict` reads it back).

        Examples:
            >>> rows = pd.DataFrame({"task": [0, 1, 2, 3], "sep_label": [0.5, 0.6, 0.8, 0.9],
            ...                      "auc_gain": [0.0, 0.01, 0.1, 0.12]})
            >>> law = GainLaw(("sep_label",), kind="isotonic", n_boot=5).fit(rows)
            >>> again = GainLaw.from_dict(json.loads(json.dumps(law.to_dict())))
            >>> bool(np.allclose(again.predict(rows), law.predict(rows)))
            True
        """
        self._fitted()
        return {"measures": list(self.measures), "kind": self.kind, "target": self.target, "n_boot": self.n_boot,
                "level": self.level, "random_state": self.random_state, "params": _jsonable(self.params_),
                "boot_params": [_jsonable(p) for p in self.boot_params_], "residuals": self.residuals_.tolist(),
                "n_rows": self.n_rows_, "n_clusters": self.n_clusters_}

    @classmethod
    def from_dict(cls, data: dict) -> "GainLaw":
        """A fitted law from `to_dict`'s data.

        Args:
            data: `to_dict`'s output.
        """
        law = cls(tuple(data["measures"]), kind=data["kind"], target=data["target"], n_boot=data["n_boot"],
                  level=data["level"], random_state=data["random_state"])
        law.params_ = _arrays(data["params"])
        law.boot_params_ = [_arrays(p) for p in data["boot_params"]]
        law.residuals_ = np.asarray(data["residuals"], dtype=float)
        law.n_rows_, law.n_clusters_ = data["n_rows"], data["n_clusters"]
        return law

    def save(self, path: str | Path) -> Path:
        """Write the law as JSON (atomically).

        Args:
            path: the file.
        """
        from toolkit.record import write_atomic

        write_atomic(Path(path), json.dumps(self.to_dict(), indent=1))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "GainLaw":
        """Read a law `save` wrote.

        Args:
            path: the file.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no gain law at {path}: fit one with `altk intervene` (it writes law.json beside its "
                              f"tables, from the dose study's rows) or pass another file")
        return cls.from_dict(json.loads(path.read_text()))

    def clone(self, **changes) -> "GainLaw":
        """An unfitted law with the same settings (`changes` override them, e.g. n_boot=0)."""
        settings = {"kind": self.kind, "target": self.target, "n_boot": self.n_boot, "level": self.level,
                    "random_state": self.random_state, **changes}
        return GainLaw(settings.pop("measures", self.measures), **settings)

    def _check(self) -> None:
        if self.kind not in LAW_KINDS:
            raise ConfigError(f"unknown gain-law kind {self.kind!r}; valid: {', '.join(LAW_KINDS)}")
        if not 1 <= len(self.measures) <= (1 if self.kind == "isotonic" else 2):
            raise ConfigError(f"a {self.kind} law reads {'one measure' if self.kind == 'isotonic' else 'one or two'}"
                              f" measures, got {list(self.measures)}")
        unknown = [m for m in self.measures if m not in LAW_MEASURES]
        if unknown:
            raise ConfigError(f"unknown measure(s) {unknown}; valid: {', '.join(LAW_MEASURES)}")

    def _fitted(self) -> dict:
        if not hasattr(self, "params_"):
            raise RecordError("this GainLaw is not fitted: call fit(table) first (or GainLaw.load(path))")
        return self.params_


def _rows(table: pd.DataFrame, columns: list[str], cluster: str) -> pd.DataFrame:
    missing = [c for c in [*columns, cluster] if c not in table]
    if missing:
        raise RecordError(f"the rows lack column(s) {missing}; they have {', '.join(map(str, table.columns))}")
    data = table[[cluster, *columns]].dropna()
    if len(data) < MIN_ROWS or (data[columns[:-1]].nunique() < 2).any():
        raise RecordError(f"{len(data)} row(s) with {', '.join(columns)} known, and the measures need at least two "
                          f"values: a curve needs at least {MIN_ROWS} rows spread along each measure")
    return data


def _measures(table: pd.DataFrame, measures: tuple[str, ...]) -> np.ndarray:
    missing = [m for m in measures if m not in table]
    if missing:
        raise RecordError(f"the law reads {', '.join(measures)}, and the rows lack {', '.join(missing)}")
    return table[list(measures)].to_numpy(float)


def _fit(kind: str, X: np.ndarray, y: np.ndarray, start: dict | None = None) -> dict:
    if kind == "isotonic":
        import warnings

        from sklearn.isotonic import IsotonicRegression

        # "auto" warns when the direction is uncertain; the fit is still the best monotone one
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Confidence interval of the Spearman", category=UserWarning)
            iso = IsotonicRegression(increasing="auto", out_of_bounds="clip").fit(X[:, 0], y)
        return {"kind": "isotonic", "x": iso.X_thresholds_.astype(float), "y": iso.y_thresholds_.astype(float)}
    return _fit_logistic(X, y, start)


SLOPE_BOUND = 50.0  # on standardised measures: a sigmoid 1/50 of a standard deviation wide is already a step


def _fit_logistic(X: np.ndarray, y: np.ndarray, start: dict | None) -> dict:
    """Least squares over (offset, amplitude, b0, b), from a few starts: the midpoint at a
    quartile of the index (or the given fit's parameters) and both signs of the amplitude."""
    mean, std = X.mean(0), X.std(0) + 1e-12
    Z = (X - mean) / std
    k = X.shape[1]

    def residuals(theta):
        return theta[0] + theta[1] * special.expit(theta[2] + Z @ theta[3:]) - y

    def jacobian(theta):
        sig = special.expit(theta[2] + Z @ theta[3:])
        slope = theta[1] * sig * (1 - sig)
        return np.column_stack([np.ones_like(sig), sig, slope, slope[:, None] * Z])

    # bounds in the target's own range: a flat cloud would otherwise send the amplitude to infinity
    # and the slope to 0 (a straight line), which the solver chases for hundreds of steps
    spread = float(np.ptp(y)) or 1.0
    lower = [y.min() - 2 * spread, -4 * spread, -np.inf] + [-SLOPE_BOUND] * k
    upper = [y.max() + 2 * spread, 4 * spread, np.inf] + [SLOPE_BOUND] * k
    if start is not None:  # a bootstrap refit starts from the full fit, on its own standardisation
        b = np.asarray(start["b"]) * std / start["std"]
        b0 = start["b0"] + float(np.asarray(start["b"]) @ ((mean - start["mean"]) / start["std"]))
        starts = [np.clip(np.r_[start["offset"], start["amplitude"], b0, b], np.add(lower, 1e-9),
                          np.subtract(upper, 1e-9))]
    else:
        starts = [np.r_[y.min(), spread, -2.0 * q, np.full(k, 2.0)] for q in (-0.67, 0.0, 0.67)]
        starts += [np.r_[y.max(), -spread, -2.0 * q, np.full(k, 2.0)] for q in (-0.67, 0.0, 0.67)]
    best = min((optimize.least_squares(residuals, s, jac=jacobian, bounds=(lower, upper), method="trf")
                for s in starts),
               key=lambda r: r.cost)
    offset, amplitude, b0, b = best.x[0], best.x[1], best.x[2], best.x[3:]
    if amplitude < 0:  # the same curve with a positive amplitude: offset + a*s(z) = (offset + a) - a*s(-z)
        offset, amplitude, b0, b = offset + amplitude, -amplitude, -b0, -b
    out = {"kind": "logistic", "offset": float(offset), "amplitude": float(amplitude), "b0": float(b0),
           "b": b.astype(float), "mean": mean, "std": std}
    if k == 1 and b[0] != 0:  # in the measure's units: gain is halfway at `location`, `scale` wide
        out["location"], out["scale"] = float(mean[0] - b0 * std[0] / b[0]), float(std[0] / b[0])
    return out


def _predict(params: dict, X: np.ndarray) -> np.ndarray:
    if params["kind"] == "isotonic":
        out = np.interp(X[:, 0], params["x"], params["y"])  # sklearn's isotonic predict: linear, clipped
        return np.where(np.isnan(X[:, 0]), np.nan, out)
    Z = (X - params["mean"]) / params["std"]
    return params["offset"] + params["amplitude"] * special.expit(params["b0"] + Z @ params["b"])


def _jsonable(params: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in params.items()}


def _arrays(params: dict) -> dict:
    return {k: (np.asarray(v, dtype=float) if isinstance(v, list) else v) for k, v in params.items()}


# ---- out-of-sample evaluation ---------------------------------------------------------------------

def leave_task_out(law: GainLaw, table: pd.DataFrame, *, cluster: str = "task") -> np.ndarray:
    """Each row's gain predicted by the law refitted without its task (no bootstrap in the refits).

    Args:
        law: the law's settings (a fitted one is not changed).
        table: the rows (with the law's measures, its target and `cluster`).
        cluster: the column left out one value at a time (default "task").

    Returns:
        (len(table),) predictions; NaN where a row lacks a measure, or its task's
        complement cannot fit a curve.

    Examples:
        >>> x = np.tile(np.linspace(0.5, 1.0, 10), 4)
        >>> rows = pd.DataFrame({"task": np.repeat(np.arange(4), 10), "sep_label": x, "auc_gain": 0.2 * x})
        >>> pred = leave_task_out(GainLaw(("sep_label",), kind="isotonic"), rows)
        >>> bool(np.allclose(pred, rows["auc_gain"]))
        True
    """
    out = np.full(len(table), np.nan)
    positions = np.arange(len(table))
    for key in table[cluster].dropna().unique():
        held = (table[cluster] == key).to_numpy()
        try:
            fitted = law.clone(n_boot=0).fit(table[~held], cluster=cluster)
        except RecordError:  # too few rows left to fit a curve: those rows stay unpredicted
            continue
        out[positions[held]] = fitted.predict(table[held])
    return out


def prediction_scores(measured, predicted, clusters, *, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> dict:
    """Pearson, Spearman and R^2 (1 - SS_res / SS_tot: negative when the law predicts worse than
    the mean) of predicted against measured gain, with percentile bootstrap CIs resampling whole
    clusters (tasks: rows of one task share its difficulty).

    Args:
        measured: the measured gains.
        predicted: the law's predictions (rows where either is NaN are left out).
        clusters: each row's task.
        n_boot: bootstrap resamples.
        seed: the bootstrap's seed.
        level: the CIs' coverage.

    Returns:
        {"rows", "clusters", "pearson", "pearson_low", "pearson_high", "spearman", ...,
        "r2", "r2_low", "r2_high"}; NaN where fewer than 3 rows, and NaN intervals from one task.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> truth = rng.normal(size=200)
        >>> s = prediction_scores(truth, truth + 0.1 * rng.normal(size=200), np.arange(200) % 20, n_boot=200)
        >>> s["pearson"] > 0.99, s["r2_low"] < s["r2"] < s["r2_high"], s["clusters"]
        (True, True, 20)
    """
    data = pd.DataFrame({"cluster": np.asarray(clusters), "measured": np.asarray(measured, dtype=float),
                         "predicted": np.asarray(predicted, dtype=float)}).dropna()
    out = {"rows": len(data), "clusters": int(data["cluster"].nunique())}
    nan = dict.fromkeys([f"{m}{s}" for m in ("pearson", "spearman", "r2") for s in ("", "_low", "_high")], math.nan)
    if len(data) < MIN_ROWS:
        return {**out, **nan}
    corr = correlate(data, "predicted", "measured", cluster="cluster", n_boot=n_boot if out["clusters"] > 1 else 0,
                     seed=seed, level=level)
    out.update({k: corr[k] for k in nan if k.startswith(("pearson", "spearman"))})
    out["r2"] = _r2(data["measured"].to_numpy(), data["predicted"].to_numpy())
    out["r2_low"] = out["r2_high"] = math.nan
    if out["clusters"] > 1:  # the same resampling scheme as `correlate`
        groups = [g[["measured", "predicted"]].to_numpy() for _, g in data.groupby("cluster")]
        rng = np.random.default_rng(seed)
        boot = [_r2(*np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))]).T)
                for _ in range(n_boot)]
        boot = np.asarray([b for b in boot if b == b])
        if len(boot):
            alpha = (1 - level) / 2
            out["r2_low"], out["r2_high"] = float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))
    return out


def _r2(measured: np.ndarray, predicted: np.ndarray) -> float:
    total = float(((measured - measured.mean()) ** 2).sum())
    return 1 - float(((measured - predicted) ** 2).sum()) / total if total > 0 else math.nan


def evaluate_law(law: GainLaw, fit_rows: pd.DataFrame, held_out: dict[str, pd.DataFrame] | None = None, *,
                 cluster: str = "task", n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The law scored in sample, leave-task-out on its own rows, and on each held-out set
    (fitted once on all of `fit_rows`): one row per evaluation (`SCORE_COLUMNS`).

    Args:
        law: the law's settings (refitted here; the given object is not changed).
        fit_rows: the rows it is fitted on (e.g. the dose study's toy rows).
        held_out: {name: rows it never saw} (e.g. other backbones, the intervention rows).
        cluster: the task column.
        n_boot: bootstrap resamples of the tasks for the CIs.
        seed: the bootstrap's seed.

    Examples:
        >>> x = np.tile(np.linspace(0.5, 1.0, 10), 5)
        >>> rows = pd.DataFrame({"task": np.repeat(np.arange(5), 10), "sep_label": x,
        ...                      "auc_gain": 0.2 * x + 0.01 * np.sin(np.arange(50))})
        >>> scores = evaluate_law(GainLaw(("sep_label",), n_boot=0), rows, {"new": rows.iloc[:20]}, n_boot=100)
        >>> scores["evaluation"].tolist(), bool(scores["pearson"].min() > 0.9)
        (['in sample', 'leave-task-out', 'new'], True)
    """
    fitted = law.clone().fit(fit_rows, cluster=cluster)
    sets = [("in sample", fit_rows, fitted.predict(fit_rows)),
            ("leave-task-out", fit_rows, leave_task_out(law, fit_rows, cluster=cluster))]
    sets += [(name, rows, fitted.predict(rows)) for name, rows in (held_out or {}).items()
             if all(m in rows for m in law.measures) and law.target in rows and len(rows)]
    out = [{"evaluation": name, **prediction_scores(rows[law.target], pred, rows[cluster], n_boot=n_boot, seed=seed)}
           for name, rows, pred in sets]
    return pd.DataFrame(out, columns=list(SCORE_COLUMNS))


def law_predictions(law: GainLaw, fit_rows: pd.DataFrame, held_out: dict[str, pd.DataFrame], *,
                    cluster: str = "task") -> pd.DataFrame:
    """Each row's measured gain beside the law's prediction: leave-task-out for the fit rows
    (no interval), and the fitted law's prediction with its interval for each held-out set.

    Args:
        law: a fitted law (its intervals are used; leave-task-out refits its settings).
        fit_rows: the rows it was fitted on.
        held_out: {name: rows it never saw}; sets lacking a measure are left out.
        cluster: the task column.

    Returns:
        One row per row: evaluation, name (the representation, weights or backbone), task,
        measured, predicted, low, high, and the law's measures.

    Examples:
        >>> x = np.tile(np.linspace(0.5, 1.0, 5), 4)
        >>> rows = pd.DataFrame({"task": np.repeat(np.arange(4), 5), "weights": "w", "sep_label": x,
        ...                      "auc_gain": 0.2 * x})
        >>> law = GainLaw(("sep_label",), kind="isotonic", n_boot=10).fit(rows)
        >>> out = law_predictions(law, rows, {"new": rows.head(2)})
        >>> out.groupby("evaluation").size().to_dict()
        {'leave-task-out': 20, 'new': 2}
    """
    sets = [("leave-task-out", fit_rows, pd.DataFrame({"predicted": leave_task_out(law, fit_rows, cluster=cluster)},
                                                      index=fit_rows.index).assign(low=np.nan, high=np.nan))]
    sets += [(name, rows, law.predict_interval(rows)) for name, rows in held_out.items()
             if all(m in rows for m in law.measures) and law.target in rows and len(rows)]
    frames = []
    for name, rows, pred in sets:
        label = next((rows[c] for c in ("representation", "weights", "backbone") if c in rows), None)
        frames.append(pd.DataFrame({"evaluation": name, "name": label, "task": rows.get(cluster),
                                    "measured": rows[law.target], **pred,
                                    **{m: rows[m] for m in law.measures}}))
    return pd.concat(frames, ignore_index=True)


def prediction_summary(predictions: pd.DataFrame, evaluations: list[str] | None = None) -> pd.DataFrame:
    """Per held-out backbone (or representation): its measured gain, mean [95% t-CI over tasks],
    beside the law's mean prediction and mean interval, and the share of its rows whose measured
    gain falls inside their interval: what the diagnostic would have said before the runs.

    Args:
        predictions: `law_predictions` output.
        evaluations: the sets to summarise (default: every one with intervals, i.e. not the
            leave-task-out rows).

    Returns:
        One row per (evaluation, name): measured, measured_low, measured_high, predicted, low,
        high, inside (share of rows in their interval), tasks.

    Examples:
        >>> p = pd.DataFrame({"evaluation": "held", "name": "w", "task": ["t0", "t1"], "measured": [0.1, 0.3],
        ...                   "predicted": [0.15, 0.2], "low": [0.0, 0.1], "high": [0.2, 0.25]})
        >>> prediction_summary(p)[["name", "measured", "predicted", "inside", "tasks"]]
          name  measured  predicted  inside  tasks
        0    w       0.2      0.175     0.5      2
    """
    held = predictions[predictions["low"].notna()] if evaluations is None else \
        predictions[predictions["evaluation"].isin(evaluations)]
    out = []
    for (evaluation, name), g in held.groupby(["evaluation", "name"], sort=False):
        m, lo, hi = mean_ci(g["measured"], bounds=GAIN)
        out.append({"evaluation": evaluation, "name": name, "measured": m, "measured_low": lo, "measured_high": hi,
                    "predicted": float(g["predicted"].mean()), "low": float(g["low"].mean()),
                    "high": float(g["high"].mean()),
                    "inside": float(((g["measured"] >= g["low"]) & (g["measured"] <= g["high"])).mean()),
                    "tasks": len(g)})
    return pd.DataFrame(out, columns=["evaluation", "name", "measured", "measured_low", "measured_high", "predicted",
                                      "low", "high", "inside", "tasks"])


# ---- partial correlations ---------------------------------------------------------------------------

def partial_correlation(table: pd.DataFrame, x: str, y: str, control: str | list[str], *, cluster: str = "task",
                        n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """The correlation of x and y with the control(s) regressed out of both (the residuals of an
    ordinary least-squares fit with an intercept): Pearson, and Spearman as the same on ranks.
    Percentile bootstrap CIs resample whole clusters.

    Args:
        table: the rows.
        x: a measure's column.
        y: the gain's column.
        control: the column (or columns) held fixed, e.g. "full_error".
        cluster: the task column.
        n_boot: bootstrap resamples.
        seed: the bootstrap's seed.
        level: the CIs' coverage.

    Returns:
        {"x", "y", "control", "rows", "clusters", "pearson" (the plain correlation, for
        reference), "partial", "partial_low", "partial_high", "partial_spearman",
        "partial_spearman_low", "partial_spearman_high"}.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> z = rng.normal(size=300)
        >>> t = pd.DataFrame({"task": np.arange(300) % 30, "z": z, "x": z + 0.5 * rng.normal(size=300),
        ...                   "y": z + 0.5 * rng.normal(size=300)})
        >>> p = partial_correlation(t, "x", "y", "z", n_boot=200)
        >>> p["pearson"] > 0.7, abs(p["partial"]) < 0.15  # x and y share only z
        (True, True)
    """
    controls = [control] if isinstance(control, str) else list(control)
    data = table[[cluster, x, y, *controls]].dropna()
    out = {"x": x, "y": y, "control": "+".join(controls), "rows": len(data), "clusters": int(data[cluster].nunique())}
    keys = ("pearson", "partial", "partial_low", "partial_high", "partial_spearman", "partial_spearman_low",
            "partial_spearman_high")
    if len(data) < len(controls) + MIN_ROWS:
        return {**out, **dict.fromkeys(keys, math.nan)}
    values = data[[x, y, *controls]].to_numpy(float)
    out["pearson"] = _safe_corr(values[:, 0], values[:, 1])
    out["partial"], out["partial_spearman"] = _partial(values), _partial(_ranks(values))
    groups = [g.index for _, g in data.reset_index(drop=True).groupby(cluster)]
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot if len(groups) > 1 else 0):
        pick = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        boot.append((_partial(values[pick]), _partial(_ranks(values[pick]))))
    boot = np.asarray(boot, dtype=float).reshape(-1, 2)
    alpha = (1 - level) / 2
    for j, name in enumerate(("partial", "partial_spearman")):
        b = boot[:, j][~np.isnan(boot[:, j])]
        out[f"{name}_low"], out[f"{name}_high"] = ((float(np.quantile(b, alpha)), float(np.quantile(b, 1 - alpha)))
                                                   if len(b) else (math.nan, math.nan))
    return out


def _partial(values: np.ndarray) -> float:
    """corr(resid(x | controls), resid(y | controls)), values = [x, y, controls...]."""
    design = np.c_[np.ones(len(values)), values[:, 2:]]
    coef, *_ = np.linalg.lstsq(design, values[:, :2], rcond=None)
    resid = values[:, :2] - design @ coef
    return _safe_corr(resid[:, 0], resid[:, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    return np.column_stack([stats.rankdata(values[:, j]) for j in range(values.shape[1])])


def _safe_corr(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) < 1e-12 or np.ptp(b) < 1e-12:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def partial_correlations(table: pd.DataFrame, measures: list[str] | None = None, *, target: str = "auc_gain",
                         control: str = "full_error", n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """`partial_correlation` of the gain with each measure, controlling for `control`: does a
    measure say anything about the gain beyond the full-data probe's error?

    Args:
        table: one row per backbone x task, with `target`, `control` and measures.
        measures: the columns (default: every `LAW_MEASURES` column present, but `control`).
        target: the gain's column.
        control: the column held fixed (default "full_error", Mussmann & Liang's quantity).
        n_boot: bootstrap resamples of the tasks.
        seed: the bootstrap's seed.

    Examples:
        >>> rng = np.random.default_rng(1)
        >>> err = rng.uniform(0.1, 0.4, 200)
        >>> t = pd.DataFrame({"task": np.arange(200) % 20, "full_error": err, "sep_label": rng.uniform(0.5, 1, 200)})
        >>> t["auc_gain"] = 0.3 * t["sep_label"] - 0.2 * err + 0.01 * rng.normal(size=200)
        >>> partial_correlations(t, n_boot=100)[["x", "control"]].values.tolist()
        [['sep_label', 'full_error']]
    """
    if control not in table:
        raise RecordError(f"no {control!r} column to control for; the rows have {', '.join(map(str, table.columns))}")
    measures = measures or [m for m in LAW_MEASURES if m in table and m != control]
    return pd.DataFrame([partial_correlation(table, m, target, control, n_boot=n_boot, seed=seed) for m in measures])


# ---- the interventions' tables ------------------------------------------------------------------------

def representation_table(records: dict[tuple[str, str], list[RunRecord]], measures: list[dict], *,
                         metric: str = "test/worst_group") -> pd.DataFrame:
    """One row per (representation, task): what the runner recorded about the representation
    (experiment, intervention parameters, measures) beside `analysis.dose.dose_row`'s gains.

    Args:
        records: (representation, task) -> its least-confidence and random runs, paired by seed
            (an empty list, or one without finished runs, is skipped).
        measures: dicts with "representation" and "task", and anything else to copy in (the
            experiment, its parameters, the separability measures, the full-data error).
        metric: the curve the gains are measured on.

    Returns:
        A DataFrame: the measure dict's keys, then n_seeds, auc_gain and final_gain with 95%
        t-intervals over seeds, efficiency, lc_final, rnd_final, seed-set accuracy and upsampling.

    Raises:
        RecordError: no finished runs at all.

    Examples:
        >>> import toolkit
        >>> recs = toolkit.load_runs("altk-doc/tasks/t0").records  # written by the RunRecord example
        >>> rows = representation_table({("pretrained", "t0"): [r for r in recs if r.weights == "pretrained"]},
        ...                             [{"representation": "pretrained", "task": "t0", "sep_label": 0.9}])
        >>> rows[["representation", "task", "sep_label", "auc_gain"]].round(4)
          representation task  sep_label  auc_gain
        0     pretrained   t0        0.9    0.1625
    """
    by_key = {(m["representation"], m["task"]): m for m in measures}
    rows = []
    for (rep, task), recs in records.items():
        if not [r for r in recs if r.status == "finished"]:
            continue
        rows.append({"representation": rep, "task": task, **by_key.get((rep, task), {}),
                     **dose_row(recs, metric=metric)})
    if not rows:
        raise RecordError("representation_table: no finished runs")
    return pd.DataFrame(rows)


def gain_by_representation(table: pd.DataFrame, value: str = "auc_gain", *, by: str | list[str] = "representation",
                           measures: tuple[str, ...] = ("sep_label", "sep_spurious", "sep_group_worst", "full_error",
                                                        "up_mismatched_min")) -> pd.DataFrame:
    """Mean [95% t-CI over tasks] of `value` per representation (or per `by`), with the mean of
    each measure, in the order the representations first appear.

    Args:
        table: rows of `representation_table` (or `analysis.dose.dose_table` with by="weights").
        value: the column averaged (default "auc_gain").
        by: the column(s) that name a representation.
        measures: the columns also averaged (those present).

    Returns:
        One row per representation: `by`, `value`, low, high, tasks and the measures' means.

    Examples:
        >>> t = pd.DataFrame({"representation": ["a", "a", "b"], "task": ["t0", "t1", "t0"],
        ...                   "auc_gain": [0.1, 0.2, 0.0], "sep_label": [0.8, 0.9, 0.5]})
        >>> gain_by_representation(t)[["representation", "auc_gain", "tasks", "sep_label"]].round(3)
          representation  auc_gain  tasks  sep_label
        0              a      0.15      2       0.85
        1              b      0.00      1       0.50
    """
    by = [by] if isinstance(by, str) else list(by)
    out = []
    for key, g in table.groupby(by, sort=False):
        m, lo, hi = mean_ci(g[value].dropna(), bounds=bounds_for(value))
        key = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(by, key)), value: m, "low": lo, "high": hi, "tasks": int(g[value].notna().sum()),
                    **{c: float(g[c].mean()) for c in measures if c in g}})
    return pd.DataFrame(out)


def phase_table(table: pd.DataFrame, value: str = "auc_gain") -> pd.DataFrame:
    """The phase diagram: per cell of (label_separability, attribute_separability) of the
    synthetic representations, the mean [95% t-CI over tasks] of `value`, the mismatched groups'
    upsampling under least-confidence, and the separabilities as the probes measured them.

    Args:
        table: rows of the phase-diagram experiment (`representation_table` with the synthetic
            cells' label_separability and attribute_separability).
        value: the gain column (default "auc_gain").

    Examples:
        >>> t = pd.DataFrame({"label_separability": [0.6, 0.6, 0.9, 0.9], "attribute_separability": [0.9] * 4,
        ...                   "task": ["t0", "t1"] * 2, "auc_gain": [0.0, 0.02, 0.1, 0.14],
        ...                   "up_mismatched_min": [1.0, 1.2, 5.0, 6.0], "sep_label": [0.6, 0.6, 0.88, 0.9],
        ...                   "sep_spurious": [0.9] * 4})
        >>> phase_table(t)[["label_separability", "auc_gain", "up_mismatched_min", "tasks"]].round(3)
           label_separability  auc_gain  up_mismatched_min  tasks
        0                 0.6      0.01                1.1      2
        1                 0.9      0.12                5.5      2
    """
    cells = ["label_separability", "attribute_separability"]
    out = []
    for (ls, at), g in table.groupby(cells, sort=True):
        m, lo, hi = mean_ci(g[value].dropna(), bounds=GAIN)
        out.append({"label_separability": ls, "attribute_separability": at, value: m, "low": lo, "high": hi,
                    "up_mismatched_min": float(g["up_mismatched_min"].mean()), "tasks": int(g[value].notna().sum()),
                    **{c: float(g[c].mean()) for c in ("sep_label", "sep_spurious") if c in g}})
    return pd.DataFrame(out)


def matched_comparison(injected: pd.DataFrame, doses: pd.DataFrame, value: str = "auc_gain") -> pd.DataFrame:
    """Injected representations against the dose checkpoints whose label separability they were
    made to match: per checkpoint, both gains, their paired difference over tasks (mean [95%
    t-CI]), and both separabilities (is matched separability enough for the dose's gain?).

    Args:
        injected: rows of the injection experiment (columns target_weights, task, `value`, sep_label).
        doses: the dose study's rows (`analysis.dose.dose_table`: weights, task, `value`, sep_label).
        value: the gain column.

    Examples:
        >>> inj = pd.DataFrame({"target_weights": ["pretrained"] * 2, "task": ["t0", "t1"],
        ...                     "auc_gain": [0.05, 0.07], "sep_label": [0.9, 0.88]})
        >>> dose = pd.DataFrame({"weights": ["pretrained"] * 2, "task": ["t0", "t1"], "auc_gain": [0.15, 0.13],
        ...                      "sep_label": [0.9, 0.89]})
        >>> matched_comparison(inj, dose)[["target_weights", "injected", "dose", "difference", "tasks"]].round(3)
          target_weights  injected  dose  difference  tasks
        0     pretrained      0.06  0.14       -0.08      2
    """
    both = injected.merge(doses.rename(columns={"weights": "target_weights"}), on=["target_weights", "task"],
                          suffixes=("_injected", "_dose"))
    out = []
    for w, g in both.groupby("target_weights", sort=False):
        diff = g[f"{value}_injected"] - g[f"{value}_dose"]
        m, lo, hi = mean_ci(diff, bounds=(-2.0, 2.0))
        out.append({"target_weights": w, "injected": float(g[f"{value}_injected"].mean()),
                    "dose": float(g[f"{value}_dose"].mean()), "difference": m, "low": lo, "high": hi,
                    "sep_label_injected": float(g["sep_label_injected"].mean()),
                    "sep_label_dose": float(g["sep_label_dose"].mean()), "tasks": len(g)})
    return pd.DataFrame(out)
