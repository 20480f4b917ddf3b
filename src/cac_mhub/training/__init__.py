"""Training recipe of the default model: phantoms -> nnU-Net v2 dataset -> plans -> training -> lean export."""
