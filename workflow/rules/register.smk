# Registration of each test subject's denoised image to the template; the subject's ground-truth
# labels are carried along the same transform so Dice against the template labels scores it.


rule register:
    input:
        unpack(method_inputs("register")),
    output:
        **method_outputs("register"),
    params:
        method_params=lambda wc: params_json("register", wc.method),
        fitted=fitted_args("register"),
        seed=config["seed"],
    log:
        job_log("register"),
    benchmark:
        job_benchmark("register")
    group:
        subject_group("register")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/ants.yaml"
    shell:
        "mrichain register --method {wildcards.method:q} --params {params.method_params:q} {params.fitted} --threads {threads} "
        "--seed {params.seed:q} --moving {input.moving:q} --fixed {input.fixed:q} --labels {input.labels:q} "
        "--out-image {output.image:q} --out-labels {output.labels:q} --out-jacobian {output.jacobian:q} "
        "--out-timing {output.timing:q} > {log:q} 2>&1"
