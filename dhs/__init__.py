"""Dark Halo Scope: selection functions of CNN strong-lens finders on DESI Legacy Surveys DR10.

Module map: one package per stage of dvc.yaml (its script in stages/ only declares it), and the
shared pieces they stand on. Imports flow downwards in this list
(tests/pipeline/test_layers.py checks it).

    stage                      package              what is in it
                               dhs.experiments      checked `dvc exp run` and the ablation table (a tool)
    report                     dhs.report           the HTML page and summary.json, from metrics/ and plots/
    cutouts, known_lenses      dhs.known_lenses     catalogue, cutout client, recall, gallery
    gates                      dhs.gates            the shortcut and leakage gates, their score memo
    calibration                dhs.calibration      reliability, temperature/isotonic, prevalence
    selection, closure         dhs.selection        the selection-function model, its file (numpy
                                                    only) and catalogue CLI, validation, closure test
    completeness, sensitivity  dhs.completeness     Spark count tables, intervals, headline, proxy
    train, external, infer     dhs.finder           loader, training loop, checkpoints, scoring,
                                                    finders made elsewhere (ONNX, TorchScript, tables)
    baseline                   dhs.baseline         metadata-only models
    stamps                     dhs.stamps           staging, real-host injection, the decoded cache,
                                                    stamp geometry
                               dhs.cutouts          Legacy Survey cutouts: client, FITS, footprint
    shared                     dhs.evaluation       score table, thresholds, intervals, AUC, PSF rule
                               dhs.models           the architectures and their spec
                               dhs.runner           the stage scripts' arguments, error contract, heartbeat
                               dhs.params           params.yaml: schema, rules, checked values
                               dhs.simulate         the injection engine and the simulated survey
                               dhs.contract         the stamp contract: codec, validator, shard
                                                    writer, RGB display, the cache's pixel stats
                               dhs.headline         the headline metrics beside each detail file, summary
                               dhs.atomic           atomic outputs and file digests

docs/layout.md walks through the same map; docs/conventions.md holds the conventions the code
cites.
"""

__version__ = "0.1.0"
PIPELINE_VERSION = f"dhs-{__version__}"
