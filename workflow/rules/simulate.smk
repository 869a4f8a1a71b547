# Simulated cohort from the MNI152 template that ships in nilearn.


rule template:
    output:
        **{k: layout.template(k) for k in layout.TEMPLATE},
    params:
        resolution=config["cohort"]["resolution_mm"],
        outdir=lambda wc, output: str(Path(output.T1w).parent),
    log:
        layout.log("template"),
    benchmark:
        layout.benchmark("template")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    conda:
        "../../envs/simulate.yaml"
    shell:
        "mrichain template --resolution {params.resolution:q} --outdir {params.outdir:q} > {log:q} 2>&1"


rule simulate_subject:
    input:
        rules.template.output,
    output:
        **layout.groundtruth_files(),
    params:
        cfg=config_json("seed", "cohort"),
        outdir=lambda wc, output: str(Path(output.dseg).parent),
        template=lambda wc, input: str(Path(input[0]).parent),
    log:
        layout.log("simulate", "{sub}"),
    benchmark:
        layout.benchmark("simulate", "{sub}")
    group:
        subject_group()
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    conda:
        "../../envs/simulate.yaml"
    shell:
        "mrichain subject --config-json {params.cfg:q} --sub {wildcards.sub:q} "
        "--template-dir {params.template:q} --outdir {params.outdir:q} > {log:q} 2>&1"
