"""Planning a run, at Snakefile parse time: the stage declaration (:mod:`stages`), the file
layout (:mod:`layout`), the conditions a stage runs at (:mod:`conditions`), the cohort's ids,
splits and ages (:mod:`cohort`), the jobs' manifests (:mod:`manifests`) and the config checks
(:mod:`config`).

Import-light: numpy, YAML and jsonschema only (no image or learning library), since the
Snakefile, and every cluster job, imports these before any job runs.
"""
