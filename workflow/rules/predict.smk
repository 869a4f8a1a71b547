# Brain age, fitted on the train split and applied to every subject. A volume model (linear) reads
# the segmentation chosen by segment.feed; an image model (learned CNN) the denoised image and its
# trained weights, and also gives a predictive interval.


rule predict:
    input:
        unpack(predict_inputs),
        info=[gt_files(s)["info"] for s in SUBJECTS],
    output:
        predictions=f"{PRED}_predictions.tsv",
        model=f"{PRED}_model.json",
    params:
        method_params=lambda wc: params_json("predict", wc.method),
        subjects=" ".join(SUBJECTS),
        splits=json.dumps(SPLITS, sort_keys=True),
        features=lambda wc, input: (
            f"--images {' '.join(input.images)} --model {input.model}"
            if "model" in input.keys()
            else f"--labels {' '.join(input.labels)}"
        ),
    log:
        "logs/predict/acq-{acq}_{method}.log",
    benchmark:
        "results/benchmarks/predict/acq-{acq}_{method}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain predict --method {wildcards.method} --params {params.method_params:q} "
        "--subjects {params.subjects} --splits {params.splits:q} {params.features} --info {input.info} "
        "--out-predictions {output.predictions} --out-model {output.model} > {log} 2>&1"
