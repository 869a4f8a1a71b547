# Denoising of the reconstruction chosen by reconstruct.feed.


rule denoise:
    input:
        unpack(method_inputs("denoise")),
    output:
        **method_outputs("denoise"),
    params:
        method_params=lambda wc: params_json("denoise", wc.method),
        fitted=fitted_args("denoise"),
    log:
        job_log("denoise"),
    benchmark:
        job_benchmark("denoise")
    group:
        subject_group("denoise")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    conda:
        "../../envs/ants.yaml"
    shell:
        "mrichain denoise --method {wildcards.method:q} --params {params.method_params:q} {params.fitted} --threads {threads} "
        "--input {input.image:q} --output {output.image:q} > {log:q} 2>&1"
