# Brain age from the segmentation chosen by segment.feed: fitted on the train split, applied to all.


rule predict:
    input:
        labels=lambda wc: [feed("segment", SEG, s, wc.acq) for s in SUBJECTS],
        info=[gt_files(s)["info"] for s in SUBJECTS],
    output:
        predictions=f"{PRED}_predictions.tsv",
        model=f"{PRED}_model.json",
    params:
        method_params=lambda wc: params_json("predict", wc.method),
        subjects=" ".join(SUBJECTS),
        splits=json.dumps(SPLITS, sort_keys=True),
    log:
        "logs/predict/acq-{acq}_{method}.log",
    benchmark:
        "results/benchmarks/predict/acq-{acq}_{method}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain predict --method {wildcards.method} --params {params.method_params:q} "
        "--subjects {params.subjects} --splits {params.splits:q} --labels {input.labels} --info {input.info} "
        "--out-predictions {output.predictions} --out-model {output.model} > {log} 2>&1"
