"""altk: why pretrained models are good active learners (Tamkin et al.), reproduced and extended.

The public API, imported on first use so that `import toolkit` stays light:

- models and data: `create_model`, `list_models` (fnmatch filters, as timm's), `create_dataset`, `list_datasets`
- runs: `resolve_config`, `list_presets`, `ALConfig` (the active-learning protocol), `run` (keywords for the
  common cases), `run_active_learning`
- frozen features: `extract_features`, `open_cache`, `run_probe`, `run_probes` (many runs in lockstep)
- interventions on a representation, as derived caches: `erase` (LEACE), `inject`, `mix`, `add_noise`;
  synthetic representations: `synthetic_caches`; the experiments on them, `run_interventions` (with an
  `InterventionPlan`); the gain law, `GainLaw`, and its diagnostic, `predict_gain`
- results: `load_run`, `load_runs` (a `Runs` folder view), `build_report`, `Explorer`, `PoolView`
- paths: `cache_path` (under `ALTK_CACHE`, default: the repository's `cache/`)
- errors: `AltkError` and its subclasses in `toolkit.errors`

Examples:
    >>> import toolkit
    >>> "toy_resnet" in toolkit.list_models()
    True
"""
from toolkit._util.version import __version__
from toolkit.errors import (
    AltkError,
    CacheError,
    ConfigError,
    DataError,
    HubError,
    LockedError,
    MissingFileError,
    ModelError,
    OutputExistsError,
    RecordError,
    RunsFailedError,
)

_LAZY = {
    "create_model": "toolkit.models", "list_models": "toolkit.models",
    "create_dataset": "toolkit.data", "list_datasets": "toolkit.data",
    "resolve_config": "toolkit.config", "list_presets": "toolkit.config", "ALConfig": "toolkit.config",
    "run": "toolkit.api", "run_active_learning": "toolkit.al.loop",
    "extract_features": "toolkit.features.cache", "open_cache": "toolkit.features.cache",
    "run_probe": "toolkit.features.probe", "run_probes": "toolkit.features.probe", "ProbeRun": "toolkit.features.probe",
    "run_select_then_finetune": "toolkit.features.select_finetune",
    "erase": "toolkit.features.interventions", "inject": "toolkit.features.interventions",
    "mix": "toolkit.features.interventions", "add_noise": "toolkit.features.interventions",
    "synthetic_caches": "toolkit.features.synthetic",
    "run_interventions": "toolkit.experiments.interventions", "InterventionPlan": "toolkit.experiments.interventions",
    "predict_gain": "toolkit.experiments.diagnose", "GainLaw": "toolkit.analysis.gain_law",
    "list_strategies": "toolkit.al.acquisition", "select_batch": "toolkit.al.acquisition",
    "load_run": "toolkit.record", "load_runs": "toolkit.runs", "Runs": "toolkit.runs",
    "cache_path": "toolkit._util.paths", "build_report": "toolkit.report.html", "Explorer": "toolkit.report.explore", "PoolView": "toolkit.report.explore",
}
__all__ = ["__version__", *_LAZY, "AltkError", "CacheError", "ConfigError", "DataError", "HubError", "LockedError",
           "MissingFileError", "ModelError", "OutputExistsError", "RecordError", "RunsFailedError"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
