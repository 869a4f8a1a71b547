# Scoring of every stage against ground truth, montages, and the aggregate metrics.json.


# The manifest of a job whose inputs grow with the cohort (scoring, training, cohort-level
# prediction), written as a file that the job reads: no shell command grows with the cohort.
# Its content is the param, so the file is rewritten (and its readers rerun) exactly when what
# the job reads changes. Runs in the Snakemake process (also under the SLURM profile).
rule manifest:
    output:
        layout.manifest(),
    params:
        manifest=lambda wc: PLAN.manifest(wc.kind, wc.name),
    log:
        layout.log("manifest", "{kind}_{name}"),
    localrule: True
    run:
        write_manifest(params.manifest, output[0], log[0])


rule score:
    input:
        manifest=manifest_path("score", acq="{acq}", stage="{stage}"),
        files=lambda wc: manifest_files(PLAN.score_manifest(wc.stage, wc.acq)),
    output:
        tsv=layout.scores(),
        figures=report(
            directory(layout.figures()),
            patterns=["{name}.png"],
            caption="../report/montage.rst",
            category="Montages",
            subcategory="{stage}",
        ),
    params:
        benchmarks=layout.BENCHMARKS,
    log:
        layout.log("score", "acq-{acq}_stage-{stage}"),
    benchmark:
        layout.benchmark("score", "acq-{acq}_stage-{stage}")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain score --manifest {input.manifest:q} --benchmarks {params.benchmarks:q} "
        "--out-tsv {output.tsv:q} --out-figures {output.figures:q} > {log:q} 2>&1"


# Every stage at every condition it runs at (mrichain.plan.conditions): the acquisitions, and for the
# stages after reconstruction the acceleration sweep (each reconstruction method's output sent
# downstream) and the oracle (ideal inputs), on the test split.
# The motion conditions (config motion) are left to the comparison: the error budget and the sweep
# compare the still chain's conditions.
SCORE_FILES = [layout.scores(s, c) for s in STAGE_NAMES for c in PLAN.stage_conditions(s)
               if c not in PLAN.motion_conditions]
MOTION_SCORE_FILES = [layout.scores(s, c) for s in [*STAGE_NAMES, MOTION] for c in PLAN.stage_conditions(s)
                      if c in PLAN.motion_conditions]
# metrics.json and the comparison also hold the MR fingerprinting branch's scores (config mrf)
AGGREGATED_FILES = SCORE_FILES + MOTION_SCORE_FILES + ([PLAN.mrf.scores] if PLAN.mrf else [])


rule aggregate:
    input:
        AGGREGATED_FILES,
    output:
        metrics="results/metrics.json",
        by_acq="results/metrics_by_acq.json",
        summary=report("results/metrics/summary.tsv", caption="../report/metrics.rst", category="Metrics"),
        comparison=report("results/comparison.tsv", caption="../report/comparison.rst", category="Metrics"),
        differences=report("results/differences.tsv", caption="../report/comparison.rst", category="Metrics"),
    params:
        primary=list(ACQS)[0],
        seed=config["seed"],
    log:
        layout.log("aggregate"),
    benchmark:
        layout.benchmark("aggregate")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain aggregate --primary-acq {params.primary:q} --scores {input:q} "
        "--out-metrics {output.metrics:q} --out-by-acq {output.by_acq:q} --out-summary {output.summary:q} --out-comparison {output.comparison:q} "
        "--out-differences {output.differences:q} --seed {params.seed:q} > {log:q} 2>&1"


# What each upstream choice costs downstream: the error budget (oracle -> fully sampled chain ->
# each acceleration and reconstruction method), the acceleration sweep and the largest
# acceleration each reconstruction method tolerates (mrichain.scoring.budget).
rule budget:
    input:
        SCORE_FILES,
    output:
        budget=report("results/error_budget.tsv", caption="../report/budget.rst", category="Error budget"),
        sweep=report("results/sweep.tsv", caption="../report/sweep.rst", category="Acceleration sweep"),
        limits=report("results/acceleration_limits.tsv", caption="../report/limits.rst", category="Acceleration sweep"),
        budget_png=report("results/figures/error_budget.png", caption="../report/budget.rst", category="Error budget"),
        sweep_png=report("results/figures/sweep.png", caption="../report/sweep.rst", category="Acceleration sweep"),
    params:
        conditions=json.dumps({k: dataclasses.asdict(c) for k, c in PLAN.conditions.items()}, sort_keys=True),
        feed=PLAN.feed("reconstruct"),
        seed=config["seed"],
    log:
        layout.log("budget"),
    benchmark:
        layout.benchmark("budget")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain budget --conditions {params.conditions:q} --feed {params.feed:q} --seed {params.seed:q} --scores {input:q} "
        "--out-budget {output.budget:q} --out-sweep {output.sweep:q} --out-limits {output.limits:q} "
        "--out-budget-png {output.budget_png:q} --out-sweep-png {output.sweep_png:q} > {log:q} 2>&1"


# The run report's first page (the Snakefile's `report:` points at it once it exists): the
# headline table and the error-budget figure (mrichain.scoring.overview).
rule overview:
    input:
        comparison=rules.aggregate.output.comparison,
        differences=rules.aggregate.output.differences,
        budget_png=rules.budget.output.budget_png,
    output:
        layout.report_overview(),
    params:
        primary=list(ACQS)[0],
    log:
        layout.log("overview"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain overview --comparison {input.comparison:q} --differences {input.differences:q} "
        "--primary-acq {params.primary:q} --budget-png {input.budget_png:q} --out {output:q} > {log:q} 2>&1"
