# The run's methods text and its references (mrichain.citation), as fMRIPrep writes
# logs/CITATION.md: a paragraph per stage naming the methods that ran, their library versions, the
# values their tuning cards chose and the training budget their model cards record, cited as
# [@key] into CITATION.bib. It reads the cards, so it reruns when one changes; the manifest's
# content is its param, so it also reruns when the config's methods or cohort change. Real inputs
# get the same two files in their BIDS derivatives folder's logs/. Targets: CITATION_TARGETS.
from mrichain.citation import citation_manifest

CITATION_MANIFEST = layout.manifest("citation", "methods")
CITATION_FILES = {"md": layout.citation(".md"), "bib": layout.citation(".bib")}


rule citation_manifest:
    output:
        CITATION_MANIFEST,
    params:
        manifest=canonical(citation_manifest(PLAN, REAL if REAL.active else None)),
    log:
        layout.log("manifest", "citation"),
    localrule: True
    run:
        write_manifest(params.manifest, output[0], log[0])


rule citation:
    input:
        manifest=CITATION_MANIFEST,
        cards=citation_cards(),
    output:
        **CITATION_FILES,
    log:
        layout.log("citation"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "mrichain citation --manifest {input.manifest:q} --out-md {output.md:q} --out-bib {output.bib:q} > {log:q} 2>&1"


CITATION_TARGETS = list(CITATION_FILES.values())


if REAL.active:

    rule real_citation:
        input:
            **CITATION_FILES,
        output:
            md=layout.citation(".md", root=f"{REAL.root}/logs"),
            bib=layout.citation(".bib", root=f"{REAL.root}/logs"),
        log:
            layout.log("real_citation"),
        localrule: True
        conda:
            "../../envs/evaluate.yaml"
        shell:
            "(cp {input.md:q} {output.md:q} && cp {input.bib:q} {output.bib:q}) > {log:q} 2>&1"

    CITATION_TARGETS += [rules.real_citation.output.md, rules.real_citation.output.bib]
