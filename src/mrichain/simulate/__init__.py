"""Simulation: the MNI152 template, a simulated cohort with ground truth, and its acquisition.

Modules: :mod:`template` (MNI152 tissue template), :mod:`cohort` (subjects, splits, ages),
:mod:`atrophy`, :mod:`warp`, :mod:`tissue`, :mod:`bias` (ground-truth parts), :mod:`signal`,
:mod:`coils`, :mod:`sampling`, :mod:`acquire` (k-space in the fastMRI layout).
"""
from mrichain.simulate.cohort import (
    Subject, age_splits, age_train_ids, assign_splits, read_subject, simulate_subject, subject_age, subject_files, subject_ids,
    write_subject,
)
from mrichain.simulate.template import Template, build_template, read_template, write_template

__all__ = [
    "Subject", "Template", "age_splits", "age_train_ids", "assign_splits", "build_template", "read_subject", "read_template",
    "simulate_subject", "subject_age", "subject_files", "subject_ids", "write_subject", "write_template",
]
