"""The cluster layer: types and the low-level cluster client."""
