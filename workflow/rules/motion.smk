# Motion (config motion, with acquire.motion): each test subject acquired again with the head moving
# at every level (conditions <level><acq>, mrichain.plan.conditions.MotionCondition), corrected by
# every method of the motion stage; the feed method's image goes down the chain in place of the
# reconstruction (Plan.resolve), scored by rule score like every stage.


rule acquire_motion:
    input:
        **layout.groundtruth_files(),
    output:
        kspace=layout.kspace(C),
    wildcard_constraints:
        acq=MOTION_CONDITION,
    params:
        # only this level's movement: changing another level reruns none of this one's jobs
        cfg=lambda wc: motion_acquire_json(wc.acq),
        acceleration=lambda wc: PLAN.motion_conditions[wc.acq].acceleration,
        center_fraction=lambda wc: ACQS[PLAN.motion_conditions[wc.acq].acq][1],
        level=lambda wc: PLAN.motion_conditions[wc.acq].level,
        gt_dir=lambda wc, input: str(Path(input.dseg).parent),
    log:
        layout.log("acquire", "{sub}_acq-{acq}"),
    benchmark:
        layout.benchmark("acquire", "{sub}_acq-{acq}")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    conda:
        "../../envs/simulate.yaml"
    shell:
        "mrichain acquire --config-json {params.cfg:q} --sub {wildcards.sub:q} --gt-dir {params.gt_dir:q} "
        "--acceleration {params.acceleration:q} --center-fraction {params.center_fraction:q} "
        "--motion-level {params.level:q} --out-kspace {output.kspace:q} > {log:q} 2>&1"


rule motion:
    input:
        unpack(method_inputs("motion")),
    output:
        **method_outputs("motion"),
    wildcard_constraints:
        acq=MOTION_CONDITION,
    params:
        method_params=lambda wc: params_json("motion", wc.method),
    log:
        job_log("motion"),
    benchmark:
        job_benchmark("motion")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    conda:
        "../../envs/simulate.yaml"
    shell:
        "mrichain motion --method {wildcards.method:q} --params {params.method_params:q} "
        "--input {input.kspace:q} --out-image {output.image:q} --out-shots {output.shots:q} > {log:q} 2>&1"
