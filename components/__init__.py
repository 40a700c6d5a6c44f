"""EtudeExperiment: the per-use-case Pulumi component (`experiment`), its Kubernetes objects (`manifests`) and
reading the results back as stack outputs (`results`)."""
