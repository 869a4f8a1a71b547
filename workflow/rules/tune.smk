# Tuning of every classical method that has a grid in the config (<stage>.tune.<method>): one job
# per (stage, method), grid search on the val split by the stage's primary score against the
# truth (mrichain.train.tune). Its card, results/tuning/<stage>-<method>.json, holds the chosen values
# that the method's jobs then run with: the baselines are selected on val as the learned methods are.


rule tune:
    input:
        manifest=manifest_path("tune", stage="{stage}", method="{method}"),
        files=lambda wc: manifest_files(PLAN.tune_manifest(wc.stage, wc.method)),
    output:
        card=layout.tuning(),
    params:
        grid=lambda wc: json.dumps(PLAN.tune_grid(wc.stage, wc.method)),
        method_params=lambda wc: params_json(wc.stage, wc.method),
        seed=config["seed"],
    log:
        layout.log("tune", "{stage}-{method}"),
    benchmark:
        layout.benchmark("tune", "{stage}-{method}")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain tune --manifest {input.manifest:q} --grid {params.grid:q} --params {params.method_params:q} "
        "--seed {params.seed:q} --threads {threads} --out {output.card:q} > {log:q} 2>&1"
