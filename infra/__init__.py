"""The GCP platform: GKE Autopilot cluster, results bucket, identities, image registry (Pulumi side)."""
