# MR fingerprinting (config mrf; mrichain.mrf, docs/explanation/mr-fingerprinting.md): the dictionary ->
# DRONE trained on it (rule train, stage mrf) -> per test subject and method the T1/T2/PD maps
# (fingerprints simulated from the subject's ground truth) and a synthetic T1w -> the segment feed
# on the synthetic T1w and on the acquired T1w cut to the same voxels (mrf_slab), by rule segment
# at the conditions MRF<method> and MRFacquired -> scores. The `method` wildcard is the method's
# name (alphanumeric, a BIDS label).
MRF_PLAN = PLAN.mrf


rule mrf_dictionary:
    output:
        MRF_PLAN.dictionary,
    params:
        mrf=json.dumps({k: config["mrf"].get(k) for k in ("sequence", "dictionary")}, sort_keys=True),
    log:
        layout.log("mrf_dictionary"),
    benchmark:
        layout.benchmark("mrf_dictionary")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain mrf-dictionary --mrf {params.mrf:q} --out {output:q} > {log:q} 2>&1"


rule mrf_map:
    input:
        unpack(lambda wc: MRF_PLAN.map_inputs(wc.sub, wc.method)),
    output:
        **MRF_PLAN.maps(),
    params:
        mrf=json.dumps({k: v for k, v in config["mrf"].items() if k not in ("methods", "segment_from", "params")},
                       sort_keys=True),
        seed=config["seed"],
        sequence=json.dumps(config["acquire"]["sequence"][C], sort_keys=True),
        gt_dir=mrf_gt_dir,
        contrast=C,
        model=lambda wc, input: shell_options({"model": input.model if "model" in input.keys() else None}),
    wildcard_constraints:
        method="|".join(MRF_PLAN.methods),
    log:
        layout.log("mrf_map", "{sub}_{method}"),
    benchmark:
        layout.benchmark("mrf_map", "{sub}_{method}")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain mrf-map --method {wildcards.method:q} --gt-dir {params.gt_dir:q} --dictionary {input.dictionary:q} "
        "{params.model} --mrf {params.mrf:q} --seed {params.seed:q} --contrast {params.contrast:q} --sequence {params.sequence:q} "
        "--threads {threads} --out-t1map {output.T1map:q} --out-t2map {output.T2map:q} --out-pdmap {output.PDmap:q} "
        "--out-synthetic {output.T1w:q} --out-timing {output.timing:q} > {log:q} 2>&1"


rule mrf_slab:
    input:
        unpack(lambda wc: MRF_PLAN.slab_inputs(wc.sub)),
    output:
        MRF_PLAN.maps(method=MRF_PLAN.REFERENCE)["T1w"],
    params:
        # only which slices are mapped: a new SNR does not cut the acquired image again
        mrf=json.dumps({"acquire": {k: v for k, v in config["mrf"].get("acquire", {}).items() if k == "n_slices"}}),
        gt_dir=mrf_gt_dir,
    log:
        layout.log("mrf_slab", "{sub}"),
    benchmark:
        layout.benchmark("mrf_slab", "{sub}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain mrf-slab --image {input.image:q} --gt-dir {params.gt_dir:q} --mrf {params.mrf:q} --out {output:q} > {log:q} 2>&1"


rule mrf_score:
    input:
        manifest=manifest_path("score", acq=layout.MRF_ACQ, stage="mrf"),
        files=manifest_files(MRF_PLAN.score_manifest()),
    output:
        tsv=MRF_PLAN.scores,
        downstream=report(MRF_PLAN.downstream, caption="../report/mrf.rst", category="MR fingerprinting"),
        figures=report(directory(MRF_PLAN.figures), patterns=["{name}.png"], caption="../report/mrf.rst",
                       category="MR fingerprinting"),
    log:
        layout.log("mrf_score"),
    benchmark:
        layout.benchmark("mrf_score")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain mrf-score --manifest {input.manifest:q} --out-tsv {output.tsv:q} --out-downstream {output.downstream:q} "
        "--out-figures {output.figures:q} > {log:q} 2>&1"
