"""Fault injection: origins that break mid-body, dead Redis, killed workers, damaged or full
LMDB files. Every scenario ends by checking that the cache serves the origin's exact bytes or
a clear error status from the contract: never a corrupt image, never a 500."""
