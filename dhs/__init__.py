"""Dark Halo Scope: selection functions of CNN strong-lens finders on DESI Legacy Surveys DR10.

Module map: two tiers (tests/pipeline/test_layers.py checks them).

The stage tier: one package per stage body of dvc.yaml (its script in stages/ only declares it).
A stage package imports the library tier and never another stage package.

    stage                      package              what is in it
    report                     dhs.report           the HTML page and summary.json, from metrics/ and plots/
    cutouts, known_lenses      dhs.known_lenses     catalogue, cutout requests, recall, gallery
    gates                      dhs.gates            the shortcut and leakage gates, their score memo
    calibration                dhs.calibration      calibration at the operating points, its figures
    selection, closure         dhs.selection        the selection-function model, its file (numpy
                                                    only) and catalogue CLI, validation, closure test
    completeness, sensitivity  dhs.completeness     one finder's completeness, the Phase 4d proxy
    infer, external            dhs.infer            the score table; finders made elsewhere packed
    train                      dhs.finder           the training loop, fresh batches, curves, throughput
    baseline                   dhs.baseline         metadata-only models
    stamps                     dhs.stamps           staging, real-host injection, the population figure
                               dhs.experiments      a tool: checked `dvc exp run` and the ablation table

The library tier: no knowledge of stages; imports flow downwards in this list.

    dhs.measurement      Spark count tables, sky weights, thresholds and completeness, their figures
    dhs.cutouts          Legacy Survey cutouts: client, FITS, footprint
    dhs.models           architectures, preprocessing, checkpoints, scoring, finders made elsewhere
    dhs.imaging          the decoded stamp cache, stamp geometry, centring
    dhs.evaluation       score table, thresholds, intervals, AUC, PSF rule, calibration maths
    dhs.runner           the stage scripts' arguments, exit statuses, heartbeat
    dhs.simulate         the injection engine and the simulated survey
    dhs.params           params.yaml: schema, rules, checked values
    dhs.contract         the stamp contract: codec, validator, shard writer, RGB display, pixel stats
    dhs.headline         the headline metrics beside each detail file, summary
    dhs.atomic           atomic outputs and file digests
    dhs.errors           StageError, the base of every "the stage could not run" error (docs/errors.md)
    dhs.devices          the torch device a params key names (auto, cpu, cuda, cuda:N)
    dhs.codebase         the project's import graph (ast): the derived deps, the resume digest

docs/layout.md walks through the same map; docs/conventions.md holds the conventions the code
cites.
"""

__version__ = "0.1.0"
PIPELINE_VERSION = f"dhs-{__version__}"
