# Training of every learned method: one job per (stage, method), on the train split, model
# selected on the val split; the MR fingerprinting branch's DRONE (stage mrf, where the config has
# an mrf section) on the dictionary. Runs on CPU here; on a cluster the slurm profile sends it to a GPU.


rule train:
    input:
        manifest=manifest_path("train", stage="{stage}", method="{method}"),
        files=lambda wc: manifest_files(PLAN.train_manifest(wc.stage, wc.method)),
    output:
        model=layout.model(),
        card=layout.model(suffix=".json"),
        curve=layout.model(suffix="_curve.tsv"),
        curve_png=report(
            layout.model(suffix="_curve.png"),
            caption="../report/curve.rst",
            category="Training curves",
            subcategory="{stage}",
        ),
    params:
        method_params=lambda wc: train_params_json(wc.stage, wc.method),
        seed=config["seed"],
        domain=lambda wc: train_domain_json(wc.stage, wc.method),
    wildcard_constraints:
        stage="|".join(PLAN.trained_stages),
    log:
        layout.log("train", "{stage}-{method}"),
    benchmark:
        layout.benchmark("train", "{stage}-{method}")
    threads: 1  # one thread per job, jobs in parallel: torch slows badly when oversubscribed
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "echo CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}} > {log:q}; "
        "mrichain train --stage {wildcards.stage:q} --method {wildcards.method:q} --manifest {input.manifest:q} "
        "--params {params.method_params:q} --seed {params.seed:q} --threads {threads} --out {output.model:q} "
        "--domain {params.domain:q} >> {log:q} 2>&1"
