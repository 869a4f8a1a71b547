# Scoring of every stage against ground truth, montages, and the aggregate metrics.json.


rule score:
    input:
        lambda wc: manifest_files(score_manifest(wc.stage, wc.acq)),
    output:
        tsv=SCORE,
        figures=report(
            directory(FIGS),
            patterns=["{name}.png"],
            caption="../report/montage.rst",
            category="Montages",
            subcategory="{stage}",
        ),
    params:
        manifest=lambda wc: json.dumps(score_manifest(wc.stage, wc.acq), sort_keys=True),
        benchmarks="results/benchmarks",
    log:
        "logs/score/acq-{acq}_stage-{stage}.log",
    benchmark:
        "results/benchmarks/score/acq-{acq}_stage-{stage}.tsv"
    group:
        "scores"  # on a cluster, all scoring jobs in one submission (profiles/slurm)
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain score --manifest {params.manifest:q} --benchmarks {params.benchmarks} "
        "--out-tsv {output.tsv} --out-figures {output.figures} > {log} 2>&1"


rule aggregate:
    input:
        expand(SCORE, acq=list(ACQS), stage=STAGES),
    output:
        metrics="results/metrics.json",
        by_acq="results/metrics_by_acq.json",
        summary=report("results/metrics/summary.tsv", caption="../report/metrics.rst", category="Metrics"),
        comparison=report("results/comparison.tsv", caption="../report/comparison.rst", category="Metrics"),
    params:
        primary=list(ACQS)[0],
    log:
        "logs/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain aggregate --primary-acq {params.primary} --scores {input} "
        "--out-metrics {output.metrics} --out-by-acq {output.by_acq} --out-summary {output.summary} --out-comparison {output.comparison} > {log} 2>&1"
