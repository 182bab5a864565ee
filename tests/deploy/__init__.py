"""Deploy tests: SLURM job scripts, Kubernetes manifests, TLS, the image and the guide."""
