"""Analyses over run records: each returns DataFrames; figures are drawn in toolkit.report.figures."""
from toolkit.analysis.composition import (
                     relative_upsampling,
                     upsampling_over_rounds,
                     upsampling_ratios,
                     upsampling_summary,
)
from toolkit.analysis.curves import (
                     curve_area,
                     default_split,
                     final_summary,
                     gain_summary,
                     label_efficiency_table,
                     learning_curves,
                     paired_gains,
                     tidy_rounds,
)

__all__ = ["curve_area", "default_split", "final_summary", "gain_summary", "paired_gains", "label_efficiency_table", "learning_curves", "tidy_rounds",
           "relative_upsampling", "upsampling_over_rounds", "upsampling_ratios", "upsampling_summary"]
