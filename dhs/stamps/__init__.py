"""Stage ``stamps``: the stamp set on local disk, every row accounted for, and the decoded cache.

- ``staging``: copying a Phase 4c dataset from S3 or a directory, verified and resumable.
- ``cache``: the decoded training cache (memory-mapped images, aligned metadata, annulus stats).
- ``geometry``: pixel radii, integer-radius annuli and the core disc of a square stamp.
- ``stage``: the body of the stage.
"""
