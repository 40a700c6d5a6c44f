"""Instance-type catalog: what each deployable machine type is, how GKE Autopilot schedules it, what it costs.

Shared by the Pulumi side (scheduling) and the runtime side (local runner, report: cost and GPU detection).
Prices are per month (730 hours) and come in two kinds, named by each entry's `price_basis`:

- `PAPER_COMMITMENT`: the ETUDE paper's figures (ICDE 2024, Table I): Compute Engine one-year-commitment prices.
  They reproduce the paper's cost column; they are not what GKE Autopilot bills (below), and the paper priced a
  T4 on an E2 machine, which GCP does not offer.
- `ON_DEMAND`: Compute Engine on-demand list prices of the machine named in `machine`, us-central1, on the date
  given; the Autopilot premium is not included.

What GKE Autopilot bills instead (the GKE pricing page): a general-purpose Pod (the `cpu` type) by its requested
vCPU, memory and ephemeral storage per hour; a GPU Pod, on GKE 1.29.4 and later (the accelerator compute class),
by the node Autopilot creates for it: the Compute Engine price of that machine, its GPUs included, plus the
Autopilot premium for that node. `machine` names the node a GPU Pod of this catalog gets. Override any price per
stack with `etude:prices` (negotiated prices, the GKE price of your region).
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER_COMMITMENT = "ETUDE paper: Compute Engine one-year commitment"
ON_DEMAND = "Compute Engine on-demand list price, us-central1, without the Autopilot premium"


@dataclass(frozen=True)
class InstanceType:
    name: str
    cpu: str  # Kubernetes CPU request of the server pod
    memory: str  # Kubernetes memory request of the server pod
    threads: int  # inference threads for the server on this machine
    accelerator: str | None  # value of the Autopilot node selector cloud.google.com/gke-accelerator
    gpus: int  # nvidia.com/gpu limit
    monthly_usd: float
    price_basis: str  # PAPER_COMMITMENT or ON_DEMAND
    price_source: str  # where the figure comes from, with its date
    machine: str  # what the pod really runs on under GKE Autopilot
    gpu_quota: str | None = None  # the Compute Engine regional quota metric its GPUs count against

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
            price_basis=PAPER_COMMITMENT,
            price_source="ETUDE paper (ICDE 2024), Table I: e2 machine, 5.5 vCPU / 32 GB",
            machine="an Autopilot general-purpose Pod (billed per requested vCPU, memory and ephemeral storage)",
        ),
        InstanceType(
            name="gpu-t4",
            cpu="5500m",
            memory="32Gi",
            threads=5,
            accelerator="nvidia-tesla-t4",
            gpus=1,
            monthly_usd=268.09,
            price_basis=PAPER_COMMITMENT,
            price_source="ETUDE paper (ICDE 2024), Table I: e2 machine + NVIDIA T4 (a combination GCP does not sell)",
            # T4s attach to N1 machines only. n1-standard-8 (8 vCPU, 30 GB) cannot hold a 32 GiB request, so the
            # node is a larger N1 shape (e.g. n1-highmem-8, 52 GB); which one Autopilot picks is not documented.
            machine="an N1 node with one T4, larger than n1-standard-8 for the 32 GiB request (accelerator class)",
            gpu_quota="NVIDIA_T4_GPUS",
        ),
        InstanceType(
            name="gpu-l4",
            cpu="7",  # fits g2-standard-8 (8 vCPU, 32 GB) after the node's reservations; 30 GiB would not
            memory="24Gi",
            threads=7,
            accelerator="nvidia-l4",
            gpus=1,
            monthly_usd=623.14,
            price_basis=ON_DEMAND,
            price_source="GCP pricing page, g2-standard-8 (1x L4) on demand, us-central1, $0.8536/h x 730 h (2024-06)",
            machine="a g2-standard-8 node (8 vCPU, 32 GB, one L4; accelerator class)",
            gpu_quota="NVIDIA_L4_GPUS",
        ),
        InstanceType(
            name="gpu-a100",
            cpu="11",
            memory="74Gi",  # the Autopilot maximum for one A100 (40 GB), AUTOPILOT_GPU_MAXIMA
            threads=11,
            accelerator="nvidia-tesla-a100",
            gpus=1,
            monthly_usd=2008.80,
            price_basis=PAPER_COMMITMENT,
            price_source="ETUDE paper (ICDE 2024), Table I: a2-highgpu-1g (A100 40 GB, 12 vCPU, 85 GB)",
            machine="an a2-highgpu-1g node (12 vCPU, 85 GB, one A100 40 GB; accelerator class)",
            gpu_quota="NVIDIA_A100_GPUS",
        ),
        InstanceType(
            name="gpu-h100",
            cpu="25",
            memory="200Gi",
            threads=25,
            accelerator="nvidia-h100-80gb",
            gpus=1,
            monthly_usd=8074.68,
            price_basis=ON_DEMAND,
            price_source=(
                "GCP pricing page, a3-highgpu-1g (1x H100 80 GB) on demand, us-central1, $11.0612/h x 730 h (2024-06)"
            ),
            machine="an a3-highgpu-1g node (26 vCPU, 234 GB, one H100 80 GB; accelerator class)",
            gpu_quota="NVIDIA_H100_GPUS",
        ),
    )
}


@dataclass(frozen=True)
class GpuPodMaximum:
    """The largest CPU and memory request Autopilot accepts for a Pod with one GPU of a type (above: rejected)."""

    cpu: float  # vCPU
    memory_gib: float
    note: str  # how sure this row is


# Source: GKE documentation, "Resource requests in Autopilot" (cloud.google.com/kubernetes-engine/docs/concepts/
# autopilot-resource-requests), section "Minimum and maximum resource requests", GPU table, rows for one GPU.
# Below the minimum (0.5 vCPU, 1 GiB) Autopilot raises a request; above the maximum it rejects the Pod. The page's
# table could not be re-read when these rows were last checked (2026-12), so each row says what it rests on;
# the figures change with GKE versions: check the page before a large run.
AUTOPILOT_GPU_MAXIMA: dict[str, GpuPodMaximum] = {
    "nvidia-tesla-t4": GpuPodMaximum(cpu=36, memory_gib=78, note="the page's figures as last recorded; unverified"),
    "nvidia-l4": GpuPodMaximum(cpu=31, memory_gib=115, note="the page's figures as last recorded; unverified"),
    "nvidia-tesla-a100": GpuPodMaximum(cpu=11, memory_gib=74, note="the page's figures (A100 40 GB)"),
    # Not recorded from the page: an upper bound from the machine itself (a3-highgpu-1g: 26 vCPU, 234 GB =
    # 218 GiB) less one vCPU for the node, i.e. a necessary check, not a sufficient one.
    "nvidia-h100-80gb": GpuPodMaximum(cpu=25, memory_gib=218, note="bound by the a3-highgpu-1g machine; unverified"),
}


def cpu_vcpu(quantity: str) -> float:
    """A Kubernetes CPU quantity (`5500m`, `11`) in vCPU."""
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory_gib(quantity: str) -> float:
    """A Kubernetes memory quantity in GiB (binary suffixes only, as the catalog writes them)."""
    units = {"Mi": 1 / 1024, "Gi": 1.0, "Ti": 1024.0}
    return float(quantity[:-2]) * units[quantity[-2:]]


def autopilot_gpu_misfit(inst: InstanceType) -> str | None:
    """Why Autopilot would reject a GPU instance type's server pod (requests above the maxima); None when it fits."""
    if not inst.gpus or inst.accelerator is None:
        return None
    maximum = AUTOPILOT_GPU_MAXIMA.get(inst.accelerator)
    if maximum is None:
        return f"{inst.name}: no Autopilot request maxima recorded for {inst.accelerator}"
    if inst.gpus != 1:
        return f"{inst.name}: only one-GPU pods are recorded in AUTOPILOT_GPU_MAXIMA"
    cpu, mem = cpu_vcpu(inst.cpu), memory_gib(inst.memory)
    if cpu > maximum.cpu or mem > maximum.memory_gib:
        return (f"{inst.name}: requests {cpu:g} vCPU / {mem:g} GiB; Autopilot allows at most "
                f"{maximum.cpu:g} vCPU / {maximum.memory_gib:g} GiB with one {inst.accelerator}")
    return None
