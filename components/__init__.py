"""EtudeExperiment: the per-use-case Pulumi component, and reading results back as stack outputs."""
