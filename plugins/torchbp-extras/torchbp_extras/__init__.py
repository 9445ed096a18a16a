"""torchbp-extras: more costs and update rules for torchbp, as an entry-point plugin."""
