"""altk: why pretrained models are good active learners (Tamkin et al.), reproduced and extended.

For notebooks: `toolkit.load_runs(folder)` (see toolkit.runs) and `toolkit.Explorer`
(toolkit.explore). Imported on first use, so `import toolkit` stays light.
"""
__version__ = "0.1.0"
__all__ = ["load_runs", "Runs", "Explorer", "PoolView"]


def __getattr__(name: str):
    if name in ("load_runs", "Runs"):
        from . import runs

        return getattr(runs, name)
    if name in ("Explorer", "PoolView"):
        from . import explore

        return getattr(explore, name)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
