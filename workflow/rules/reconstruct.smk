# Reconstruction from (undersampled) multi-coil k-space in the fastMRI layout.
# The input may be any fastMRI-layout file, not only one from our simulator.


rule reconstruct:
    input:
        unpack(model_input("reconstruct")),
        kspace=KSPACE,
    output:
        image=RECON,
    params:
        method_params=lambda wc: params_json("reconstruct", wc.method),
        model=model_arg("reconstruct"),
    log:
        "logs/reconstruct/{sub}_acq-{acq}_{method}.log",
    benchmark:
        "results/benchmarks/reconstruct/{sub}_acq-{acq}_{method}.tsv"
    group:
        subject_group
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    conda:
        "../../envs/simulate.yaml"
    shell:
        "mrichain reconstruct --method {wildcards.method} --params {params.method_params:q} {params.model} "
        "--input {input.kspace} --output {output.image} > {log} 2>&1"
