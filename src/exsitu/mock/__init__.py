"""The mock universe: galaxy models and a writer of the IllustrisTNG on-disk layout."""
