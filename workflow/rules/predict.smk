# Brain age, fitted on the train split and applied to every subject, one job over the cohort. Its
# manifest (results/manifests/job/, rule `manifest`) lists every subject, its split, its true-age
# file and what the method reads: the segmentation chosen by segment.feed for a volume model
# (linear), the denoised image for an image model (learned CNN, with its trained weights).


rule predict:
    input:
        unpack(method_inputs("predict")),
    output:
        **method_outputs("predict"),
    params:
        method_params=lambda wc: params_json("predict", wc.method),
        fitted=fitted_args("predict"),
    log:
        job_log("predict"),
    benchmark:
        job_benchmark("predict")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain predict --method {wildcards.method:q} --params {params.method_params:q} {params.fitted} "
        "--manifest {input.manifest:q} --out-predictions {output.predictions:q} --out-model {output.model:q} > {log:q} 2>&1"
