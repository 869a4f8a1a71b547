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
        "mrichain register --method {wildcards.method} --params {params.method_params:q} {params.fitted} --threads {threads} "
        "--seed {params.seed} --moving {input.moving} --fixed {input.fixed} --labels {input.labels} "
        "--out-image {output.image} --out-labels {output.labels} --out-jacobian {output.jacobian} "
        "--out-timing {output.timing} > {log} 2>&1"
