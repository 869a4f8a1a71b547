# Reconstruction from (undersampled) multi-coil k-space in the fastMRI layout.
# The input may be any fastMRI-layout file, not only one from our simulator.


rule reconstruct:
    input:
        unpack(method_inputs("reconstruct")),
    output:
        **method_outputs("reconstruct"),
    params:
        method_params=lambda wc: params_json("reconstruct", wc.method),
        fitted=fitted_args("reconstruct"),
    log:
        job_log("reconstruct"),
    benchmark:
        job_benchmark("reconstruct")
    group:
        subject_group("reconstruct")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    conda:
        "../../envs/simulate.yaml"
    shell:
        "mrichain reconstruct --method {wildcards.method:q} --params {params.method_params:q} {params.fitted} "
        "--input {input.kspace:q} --output {output.image:q} > {log:q} 2>&1"
