# Motion (config motion, with acquire.motion): each test subject acquired again with the head moving
# at every level (<level><acq>, e.g. severeR4), corrected by every method of the motion stage; each
# method's image goes down the chain in place of the reconstruction (conditions severeR4 for the
# feed, severeR4<method> for the others: mrichain.plan.conditions.MotionCondition, Plan.resolve),
# scored by rule score like every stage.


rule acquire_motion:
    input:
        **layout.groundtruth_files(),
    output:
        kspace=layout.kspace(C),
    wildcard_constraints:
        acq=MOTION_ACQUIRED,
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
        acq=MOTION_ACQUIRED,
    params:
        method_params=lambda wc: params_json("motion", wc.method),
        fitted=fitted_args("motion"),
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
        "mrichain motion --method {wildcards.method:q} --params {params.method_params:q} {params.fitted} "
        "--threads {threads} --input {input.kspace:q} --out-image {output.image:q} --out-shots {output.shots:q} "
        "> {log:q} 2>&1"


# What motion costs downstream, per level and correction, against the still acquisition, and how
# much motion each correction absorbs (mrichain.scoring.motion_budget).
rule motion_budget:
    input:
        # the stages scored at the motion conditions, and the same stages at the still acquisitions
        MOTION_SCORE_FILES + list(dict.fromkeys(
            layout.scores(s, c.acq) for s in STAGE_NAMES for c in PLAN.motion_conditions.values()
            if c.label in PLAN.stage_conditions(s))),
    output:
        budget=report("results/motion_budget.tsv", caption="../report/motion.rst", category="Motion"),
        limits=report("results/motion_limits.tsv", caption="../report/motion.rst", category="Motion"),
        png=report("results/figures/motion_budget.png", caption="../report/motion.rst", category="Motion"),
    params:
        conditions=json.dumps({k: dataclasses.asdict(c) for k, c in PLAN.motion_conditions.items()}, sort_keys=True),
        levels=json.dumps(list(config["acquire"]["motion"]["levels"])),
        seed=config["seed"],
    log:
        layout.log("motion_budget"),
    benchmark:
        layout.benchmark("motion_budget")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain motion-budget --conditions {params.conditions:q} --levels {params.levels:q} --scores {input:q} "
        "--out-budget {output.budget:q} --out-limits {output.limits:q} --out-png {output.png:q} "
        "--seed {params.seed:q} > {log:q} 2>&1"
