"""Dark Halo Scope: selection functions of CNN strong-lens finders on DESI Legacy Surveys DR10."""

__version__ = "0.1.0"
PIPELINE_VERSION = f"dhs-{__version__}"
