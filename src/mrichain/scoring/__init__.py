"""Scoring against ground truth: the per-stage scorers (:mod:`evaluate`), the metrics and their
facts (:mod:`metrics`), the cohort tables with intervals and the "did it learn" check
(:mod:`aggregate`), the error budget and acceleration sweep (:mod:`budget`) and the figures
(:mod:`figures`: montages and scatter plots).
"""
