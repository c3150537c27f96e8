"""The Phase 4c stamp contract: schema, stamp codec, dataset validation, the Hive shard writer
(``shards``), the RGB display of a stamp (``rgb``) and the normalisation statistics stored with
each decoded stamp (``norm_stats``: the validator measures them as it decodes)."""

from dhs.contract.codec import BAND_KEYS, StampError, decode_stamp, encode_stamp
from dhs.contract.schema import Contract, load_contract
from dhs.contract.validate import Problem, ValidationReport, validate

__all__ = [
    "BAND_KEYS", "StampError", "decode_stamp", "encode_stamp",
    "Contract", "load_contract", "Problem", "ValidationReport", "validate",
]
