"""Model builders: FromScratch and friends, transfer backbones, heads."""
