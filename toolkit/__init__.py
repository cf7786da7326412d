"""altk: why pretrained models are good active learners (Tamkin et al.), reproduced and extended."""
__version__ = "0.1.0"
