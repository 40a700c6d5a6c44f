"""Instance-type catalog: what each deployable machine type is, how GKE Autopilot schedules it, what it costs.

Shared by the Pulumi side (scheduling) and the runtime side (local runner, report: cost and GPU detection).
Prices are per month (730 hours). The paper's figures are GCP one-year-commitment prices; L4 and H100 are
on-demand list prices, as the source column says. Override them per stack with `etude:prices`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceType:
    name: str
    cpu: str  # Kubernetes CPU request of the server pod
    memory: str  # Kubernetes memory request of the server pod
    threads: int  # inference threads for the server on this machine
    accelerator: str | None  # value of the Autopilot node selector cloud.google.com/gke-accelerator
    gpus: int  # nvidia.com/gpu limit
    monthly_usd: float
    price_source: str

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"


INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in (
        InstanceType(
            name="cpu",
            cpu="5500m",
            memory="32Gi",
            threads=5,
            accelerator=None,
            gpus=0,
            monthly_usd=108.09,
            price_source="ETUDE paper (ICDE 2024): GCP e2, 5.5 vCPU / 32 GB, one-year commitment",
        ),
        InstanceType(
            name="gpu-t4",
            cpu="5500m",
            memory="32Gi",
            threads=5,
            accelerator="nvidia-tesla-t4",
            gpus=1,
            monthly_usd=268.09,
            price_source="ETUDE paper (ICDE 2024): GCP e2 + NVIDIA T4, one-year commitment",
        ),
        InstanceType(
            name="gpu-l4",
            cpu="7500m",
            memory="30Gi",
            threads=7,
            accelerator="nvidia-l4",
            gpus=1,
            monthly_usd=623.14,
            price_source="GCP pricing page, g2-standard-8 (1x L4) on demand, us-central1, $0.8536/h x 730 h (2024-06)",
        ),
        InstanceType(
            name="gpu-a100",
            cpu="11",
            memory="74Gi",  # Autopilot caps a one-A100 (40 GB) pod at 74 GiB
            threads=11,
            accelerator="nvidia-tesla-a100",
            gpus=1,
            monthly_usd=2008.80,
            price_source="ETUDE paper (ICDE 2024): GCP a2-highgpu-1g (A100 40 GB, 12 vCPU, 85 GB), one-year commitment",
        ),
        InstanceType(
            name="gpu-h100",
            cpu="25",
            memory="200Gi",
            threads=25,
            accelerator="nvidia-h100-80gb",
            gpus=1,
            monthly_usd=8074.68,
            price_source=(
                "GCP pricing page, a3-highgpu-1g (1x H100 80 GB) on demand, us-central1, $11.0612/h x 730 h (2024-06)"
            ),
        ),
    )
}

