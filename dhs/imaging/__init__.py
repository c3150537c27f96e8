"""Stamp access, shared by every stage that reads stamps: the decoded cache and stamp geometry.

- ``cache``: the decoded cache (memory-mapped images, aligned metadata, annulus stats) and its reader.
- ``geometry``: pixel radii, integer-radius annuli and the core disc of a square stamp.
- ``centring``: the light-weighted centre of a stamp and re-centring, the host-removal residual.
"""
