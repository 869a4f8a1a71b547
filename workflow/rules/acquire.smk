# Acquisition: signal equation, coil sensitivities, Cartesian undersampling, noise -> fastMRI HDF5.


rule acquire:
    input:
        **layout.groundtruth_files(),
    output:
        kspace=layout.kspace(C),
        noisefree=layout.noisefree(C),
    wildcard_constraints:
        acq=ACQUISITION,
    params:
        # without the motion section: the still acquisitions do not depend on it (motion.smk)
        cfg=config_json("seed", "acquire", drop=("acquire.accelerations", "acquire.center_fractions", "acquire.motion")),
        acceleration=lambda wc: ACQS[wc.acq][0],
        center_fraction=lambda wc: ACQS[wc.acq][1],
        gt_dir=lambda wc, input: str(Path(input.dseg).parent),
    log:
        layout.log("acquire", "{sub}_acq-{acq}"),
    benchmark:
        layout.benchmark("acquire", "{sub}_acq-{acq}")
    group:
        subject_group("acquire")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    conda:
        "../../envs/simulate.yaml"
    shell:
        "mrichain acquire --config-json {params.cfg:q} --sub {wildcards.sub:q} --gt-dir {params.gt_dir:q} "
        "--acceleration {params.acceleration:q} --center-fraction {params.center_fraction:q} "
        "--out-kspace {output.kspace:q} --out-noisefree {output.noisefree:q} > {log:q} 2>&1"
