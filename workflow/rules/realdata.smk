# Real inputs (config `input.kind: bids | fastmri`): the plan is mrichain.realdata.plan.RealPlan
# (REAL, built in common.smk; a BIDS dataset is discovered through pybids at parse time). The
# learned and tuned methods are the cohort's (models/, results/tuning/: fitted_args); a learned
# method checks its card against the input first (--real-input: mrichain.realdata.domain).
# Outputs a lab keeps are BIDS derivatives under input.output_dir.


wildcard_constraints:
    real=REAL.wildcard(),
    realdir=r"sub-[A-Za-z0-9]+(?:/ses-[A-Za-z0-9]+)?/anat",
    suffix=r"[A-Za-z0-9]+",


if REAL.kind == "bids":

    rule real_prepare:
        input:
            image=lambda wc: REAL.inputs[wc.real].path,
            mask=lambda wc: [REAL.inputs[wc.real].mask] if REAL.inputs[wc.real].mask else [],
        output:
            **REAL.prepared(),
        params:
            mask=lambda wc, input: shell_options({"mask": input.mask[0] if input.mask else None}),
            age=lambda wc: shell_options({"age": REAL.inputs[wc.real].age}),
            resolution=REAL.voxel_mm,
        log:
            layout.log("real_prepare", "{real}"),
        benchmark:
            layout.benchmark("real_prepare", "{real}")
        threads: 1
        resources:
            mem_mb=4000,
            runtime=20,
        conda:
            "../../envs/ants.yaml"
        shell:
            "mrichain prepare --input {input.image:q} {params.mask} {params.age} --resolution {params.resolution:q} "
            "--threads {threads} --out-image {output.image:q} --out-mask {output.mask:q} --out-prep {output.prep:q} "
            "--out-info {output.info:q} > {log:q} 2>&1"

    rule real_image_stage:
        # denoising of the prepared image (rimage T1w), segmentation of the denoising feed's output (dseg)
        input:
            image=lambda wc: (REAL.prepared(wc.real)["image"] if REAL_STAGE[wc.rimage] == "denoise"
                              else REAL.feed_output("denoise", wc.real)),
            fitted=lambda wc: real_fitted_files(REAL_STAGE[wc.rimage])(wc),
        output:
            REAL.work("{rimage}", "{real}", method="{method}"),
        params:
            stage=lambda wc: REAL_STAGE[wc.rimage],
            method_params=lambda wc: params_json(REAL_STAGE[wc.rimage], wc.method),
            fitted=lambda wc: fitted_args(REAL_STAGE[wc.rimage])(wc),
            suffix=lambda wc: REAL.inputs[wc.real].suffix,
        wildcard_constraints:
            rimage="|".join(REAL_STAGE),
        log:
            layout.log("real_image_stage", "{real}_{rimage}_{method}"),
        benchmark:
            layout.benchmark("real_image_stage", "{real}_{rimage}_{method}")
        threads: 1
        resources:
            mem_mb=3000,
            runtime=20,
        conda:
            "../../envs/ants.yaml"
        shell:
            "mrichain {params.stage:q} --method {wildcards.method:q} --params {params.method_params:q} {params.fitted} "
            "--threads {threads} --real-input {params.suffix:q} --input {input.image:q} --output {output:q} > {log:q} 2>&1"

    rule real_restore:
        input:
            image=lambda wc: REAL.restore_source(wc.real, wc.method, wc.suffix)[0],
            prep=REAL.prepared()["prep"],
        output:
            REAL.derivative(desc="{method}"),
        params:
            labels=lambda wc: "--labels" if REAL.restore_source(wc.real, wc.method, wc.suffix)[1] else "",
        log:
            layout.log("real_restore", "{realdir}/{real}_{method}_{suffix}"),
        threads: 1
        resources:
            mem_mb=3000,
            runtime=10,
        conda:
            "../../envs/evaluate.yaml"
        shell:
            "mrichain restore --input {input.image:q} --prep {input.prep:q} {params.labels} --output {output:q} > {log:q} 2>&1"

    rule real_predict_manifest:
        output:
            f"{WORK_REAL}/manifests/predict-{{method}}_{{real}}.json",
        params:
            manifest=lambda wc: REAL.predict_manifest(wc.method, wc.real),
        log:
            layout.log("manifest", "real_predict-{method}_{real}"),
        localrule: True
        run:
            write_manifest(params.manifest, output[0], log[0])

    rule real_predict:
        # the cohort's fit (train split, as its own predict job) applied to one real image
        input:
            manifest=f"{WORK_REAL}/manifests/predict-{{method}}_{{real}}.json",
            files=lambda wc: manifest_files(REAL.predict_manifest(wc.method, wc.real)),
            fitted=lambda wc: real_fitted_files("predict")(wc),
        output:
            predictions=REAL.stage_output("predict", "{real}", "{method}"),
            model=REAL.work("brainage", "{real}", method="{method}", ext=".json"),
        params:
            method_params=lambda wc: params_json("predict", wc.method),
            fitted=fitted_args("predict"),
        log:
            layout.log("real_predict", "{real}_{method}"),
        benchmark:
            layout.benchmark("real_predict", "{real}_{method}")
        threads: 1
        resources:
            mem_mb=3000,
            runtime=15,
        conda:
            "../../envs/evaluate.yaml"
        shell:
            "mrichain predict --method {wildcards.method:q} --params {params.method_params:q} {params.fitted} "
            "--manifest {input.manifest:q} --out-predictions {output.predictions:q} --out-model {output.model:q} > {log:q} 2>&1"


if REAL.kind == "fastmri":

    rule fastmri_reconstruct:
        input:
            kspace=lambda wc: REAL.inputs[wc.real].path,
            fitted=lambda wc: real_fitted_files("reconstruct")(wc),
        output:
            REAL.stage_output("reconstruct", "{real}", "{method}", "{acq}"),
        params:
            method_params=lambda wc: params_json("reconstruct", wc.method),
            fitted=fitted_args("reconstruct"),
            acceleration=lambda wc: REAL.acqs[wc.acq][0],
            center_fraction=lambda wc: REAL.acqs[wc.acq][1],
            seed=config["seed"],
        log:
            layout.log("fastmri_reconstruct", "{realdir}/{real}_acq-{acq}_{method}_{suffix}"),
        benchmark:
            layout.benchmark("fastmri_reconstruct", "{realdir}/{real}_acq-{acq}_{method}_{suffix}")
        threads: 1
        resources:
            mem_mb=6000,
            runtime=30,
        conda:
            "../../envs/evaluate.yaml"
        shell:
            "mrichain reconstruct --method {wildcards.method:q} --params {params.method_params:q} {params.fitted} "
            "--threads {threads} --real-input {wildcards.suffix:q} --input {input.kspace:q} "
            "--acceleration {params.acceleration:q} --center-fraction {params.center_fraction:q} --seed {params.seed:q} "
            "--output {output:q} > {log:q} 2>&1"

    rule fastmri_denoise:
        input:
            image=lambda wc: REAL.feed_output("reconstruct", wc.real, wc.acq),
            fitted=lambda wc: real_fitted_files("denoise")(wc),
        output:
            REAL.stage_output("denoise", "{real}", "{method}", "{acq}"),
        params:
            method_params=lambda wc: params_json("denoise", wc.method),
            fitted=fitted_args("denoise"),
        log:
            layout.log("fastmri_denoise", "{realdir}/{real}_acq-{acq}_{method}_{suffix}"),
        benchmark:
            layout.benchmark("fastmri_denoise", "{realdir}/{real}_acq-{acq}_{method}_{suffix}")
        threads: 1
        resources:
            mem_mb=3000,
            runtime=20,
        conda:
            "../../envs/ants.yaml"
        shell:
            "mrichain denoise --method {wildcards.method:q} --params {params.method_params:q} {params.fitted} "
            "--threads {threads} --real-input {wildcards.suffix:q} --input {input.image:q} --output {output:q} > {log:q} 2>&1"

    rule fastmri_score:
        input:
            kspace=lambda wc: REAL.inputs[wc.real].path,
            recons=lambda wc: [REAL.stage_output("reconstruct", wc.real, m, wc.acq) for m in REAL.methods("reconstruct")],
        output:
            REAL.fastmri_scores(),
        params:
            methods=lambda wc: list(REAL.methods("reconstruct")),
        log:
            layout.log("fastmri_score", "{real}_acq-{acq}"),
        threads: 1
        resources:
            mem_mb=3000,
            runtime=10,
        conda:
            "../../envs/evaluate.yaml"
        shell:
            "mrichain fastmri-score --kspace {input.kspace:q} --methods {params.methods:q} --recons {input.recons:q} "
            "--key {wildcards.real:q} --acq {wildcards.acq:q} --out {output:q} > {log:q} 2>&1"


rule real_summary_manifest:
    output:
        f"{WORK_REAL}/manifests/summary.json",
    params:
        manifest=REAL.summary_manifest(),
    log:
        layout.log("manifest", "real_summary"),
    localrule: True
    run:
        write_manifest(params.manifest, output[0], log[0])


rule real_summary:
    input:
        manifest=f"{WORK_REAL}/manifests/summary.json",
        files=REAL.outputs(),
    output:
        **{k: (report(v, caption="../report/realdata.rst", category="Real inputs") if k == "table" else v)
           for k, v in REAL.summary_files().items()},
    params:
        brain_age=lambda wc, output: shell_options({"out-brain-age": output.brain_age if "brain_age" in output.keys() else None}),
    log:
        layout.log("real_summary"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        # the scans.tsv tables (one per subject/session folder) are named in the manifest, not here
        "mrichain real-summary --manifest {input.manifest:q} --out-metrics {output.metrics:q} --out-table {output.table:q} "
        "{params.brain_age} --out-description {output.description:q} > {log:q} 2>&1"
