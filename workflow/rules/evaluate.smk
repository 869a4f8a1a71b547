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
        "mrichain score --manifest {input.manifest} --benchmarks {params.benchmarks} "
        "--out-tsv {output.tsv} --out-figures {output.figures} > {log} 2>&1"


rule aggregate:
    input:
        expand(layout.scores(), acq=list(ACQS), stage=STAGE_NAMES),
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
        "mrichain aggregate --primary-acq {params.primary} --scores {input} "
        "--out-metrics {output.metrics} --out-by-acq {output.by_acq} --out-summary {output.summary} --out-comparison {output.comparison} "
        "--out-differences {output.differences} --seed {params.seed} > {log} 2>&1"
