"""Small security building blocks: paths, injection scanning, taint, zeroization, manifests."""
