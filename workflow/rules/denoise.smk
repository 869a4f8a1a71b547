# Denoising of the reconstruction chosen by reconstruct.feed.


rule denoise:
    input:
        unpack(model_input("denoise")),
        image=lambda wc: feed("reconstruct", RECON, wc.sub, wc.acq),
    output:
        image=DENOISED,
    params:
        method_params=lambda wc: params_json("denoise", wc.method),
        model=model_arg("denoise"),
    log:
        "logs/denoise/{sub}_acq-{acq}_{method}.log",
    benchmark:
        "results/benchmarks/denoise/{sub}_acq-{acq}_{method}.tsv"
    group:
        subject_group
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    conda:
        "../../envs/ants.yaml"
    shell:
        "mrichain denoise --method {wildcards.method} --params {params.method_params:q} {params.model} --threads {threads} "
        "--input {input.image} --output {output.image} > {log} 2>&1"
