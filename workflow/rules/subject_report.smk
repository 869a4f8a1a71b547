# Per-subject visual reports (mrichain.scoring.subject_report): one HTML page per subject with its
# reportlets (PNG, in a figures/ folder beside the page), scores where a reference exists and the
# provenance of every method shown. What a page shows is a JSON manifest the rule before it writes:
# it grows with the methods and sessions, so it is never a command line.
#   simulated cohort: results/reports/<sub>.html for each test subject, at the primary acquisition
#   real BIDS inputs: <input.output_dir>/sub-<label>.html, every session and run of the subject
# Targets for rule all: SUBJECT_REPORTS_SIM and SUBJECT_REPORTS_REAL (empty without BIDS inputs).
# (The manifests: sim_report_manifest and real_report_manifest in common.smk.)
from mrichain.scoring import subject_report as subject_reports

SUBJECT_REPORTS_SIM = subject_reports.sim_targets(PLAN)
SUBJECT_REPORTS_REAL = subject_reports.real_targets(REAL)


rule subject_report_manifest:
    output:
        layout.manifest("subject_report", "{sub}"),
    params:
        manifest=lambda wc: sim_report_manifest(wc.sub),
    log:
        layout.log("manifest", "subject_report_{sub}"),
    localrule: True
    run:
        subject_reports.write_report_manifest(params.manifest, output[0], log[0])


rule subject_report:
    input:
        manifest=layout.manifest("subject_report", "{sub}"),
        files=lambda wc: subject_reports.manifest_inputs(sim_report_manifest(wc.sub)),
    output:
        html=layout.subject_page(),
        figures=directory(layout.subject_figures()),
    log:
        layout.log("subject_report", "{sub}"),
    benchmark:
        layout.benchmark("subject_report", "{sub}")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain subject-report --manifest {input.manifest:q} --out-html {output.html:q} "
        "--out-figures {output.figures:q} > {log:q} 2>&1"


if REAL.kind == "bids" and REAL.active:

    rule real_subject_report_manifest:
        output:
            subject_reports.real_manifest_path(),
        params:
            manifest=lambda wc: real_report_manifest(wc.rsub),
        wildcard_constraints:
            rsub=subject_reports.real_label_wildcard(REAL),
        log:
            layout.log("manifest", "subject_report_sub-{rsub}"),
        localrule: True
        run:
            subject_reports.write_report_manifest(params.manifest, output[0], log[0])

    rule real_subject_report:
        input:
            manifest=subject_reports.real_manifest_path(),
            files=lambda wc: subject_reports.manifest_inputs(real_report_manifest(wc.rsub)),
        output:
            html=subject_reports.real_page(REAL),
            figures=directory(subject_reports.real_figures(REAL)),
        wildcard_constraints:
            rsub=subject_reports.real_label_wildcard(REAL),
        log:
            layout.log("real_subject_report", "sub-{rsub}"),
        benchmark:
            layout.benchmark("real_subject_report", "sub-{rsub}")
        threads: 1
        resources:
            mem_mb=3000,
            runtime=10,
        conda:
            "../../envs/evaluate.yaml"
        shell:
            "mrichain subject-report --manifest {input.manifest:q} --out-html {output.html:q} "
            "--out-figures {output.figures:q} > {log:q} 2>&1"

    # the pages and their figures are not BIDS files: the validator is told to pass over them
    rule real_subject_report_bidsignore:
        output:
            subject_reports.real_bidsignore(REAL),
        log:
            layout.log("real_subject_report_bidsignore"),
        localrule: True
        run:
            subject_reports.write_bidsignore(output[0], log[0])
