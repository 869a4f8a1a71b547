# Tissue segmentation (CSF, GM, WM) in native space of the denoised image chosen by denoise.feed.


rule segment:
    input:
        unpack(method_inputs("segment")),
    output:
        **method_outputs("segment"),
    params:
        method_params=lambda wc: params_json("segment", wc.method),
        fitted=fitted_args("segment"),
        contrast=C,
    log:
        job_log("segment"),
    benchmark:
        job_benchmark("segment")
    group:
        subject_group("segment")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    conda:
        "../../envs/ants.yaml"
    shell:
        "mrichain segment --method {wildcards.method:q} --params {params.method_params:q} {params.fitted} --threads {threads} "
        "--contrast {params.contrast:q} --input {input.image:q} --output {output.labels:q} > {log:q} 2>&1"
