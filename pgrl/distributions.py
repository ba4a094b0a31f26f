"""The action distributions of the policy heads: one class per head (filled in below)."""

HEADS = ("bernoulli", "categorical")
