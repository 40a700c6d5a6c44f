"""The Pulumi side's platform and program: stack config (`config`), the GCP platform (`platform`: GKE Autopilot
cluster, results bucket, identities, image registry, kubeconfig), the images (`image`), the program behind
`__main__.py` (`program`) and a mock runner that shows what a stack declares without any cloud (`mockrun`).
Never imports torch, numpy or the runtime packages."""
