"""The selection function as a product: fit (``fit``), check (``validate``, ``closure``), file and
evaluation (``function``: numpy only), the stage body (``stage``) and the catalogue CLI
(``python -m dhs.selection``)."""
