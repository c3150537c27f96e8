"""Legacy Survey grz cutouts: the cached, retrying HTTP client (``client``), reading and writing
one FITS cutout (``fits``), and the DR10 South footprint (``footprint``). Used by the known-lens
stages and by the stamps stage's real-host source."""
