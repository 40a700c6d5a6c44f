"""The platform every experiment runs on: a regional GKE Autopilot cluster, one results bucket, the identities,
an Artifact Registry repository and a kubeconfig.

Least privilege: the workload's Google service account holds `roles/storage.objectUser` on the results bucket
and nothing else (no project-wide role, no key); pods reach it through Workload Identity via a Kubernetes service
account named after the platform stack (`etude-runner-<stack>`). Workload Identity principals are the same in
every cluster of a project ("identity sameness"), so a fixed name would let the pods of one platform's cluster
act as every other platform's service account in that project. The nodes may pull from the repository
(`roles/artifactregistry.reader` on the repository only). The namespace enforces the `restricted` Pod Security Standard.

Use-case stacks read `PlatformOutputs` either from this component (same stack) or through a StackReference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s
from pulumi import Output, ResourceOptions

from etude.infra.config import PlatformSettings
from etude.infra.kubeconfig import gke_kubeconfig

APIS = (
    "cloudresourcemanager.googleapis.com",  # the project's number (get_project_output) for the image-pull grant
    "compute.googleapis.com",
    "container.googleapis.com",
    "artifactregistry.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "storage.googleapis.com",
)
BUCKET_ROLE = "roles/storage.objectUser"  # read, write, list and delete objects; no bucket or IAM admin
KSA_PREFIX = "etude-runner"
RESULTS_PREFIX = "results/"


@dataclass(frozen=True)
class PlatformArgs:
    project: str
    region: str
    settings: PlatformSettings
    stack: str  # makes project-wide names (service account, repository) unique per stack


@dataclass
class PlatformOutputs:
    """What an experiment needs from a platform."""

    kubeconfig: Output[str]
    bucket: Output[str]
    namespace: Output[str]
    service_account: Output[str]  # the Kubernetes service account bound to the bucket through Workload Identity
    registry: Output[str]  # `<region>-docker.pkg.dev/<project>/<repository>`
    project: Output[str]  # the GCP project of the bucket (the results reader's storage client)

    @staticmethod
    def from_stack(ref: pulumi.StackReference) -> PlatformOutputs:
        def get(key: str) -> Output[str]:
            def required(value: object) -> str:
                return _required(ref, key, value)

            return ref.get_output(key).apply(required)

        return PlatformOutputs(
            kubeconfig=Output.secret(get("kubeconfig")),
            bucket=get("bucket"),
            namespace=get("namespace"),
            service_account=get("serviceAccount"),
            registry=get("registry"),
            project=get("project"),
        )


def _required(ref: pulumi.StackReference, key: str, value: object) -> str:
    if not value and not pulumi.runtime.is_dry_run():
        raise pulumi.RunError(f"platform stack output {key!r} is missing; run `pulumi up` on the platform stack first")
    return str(value) if value is not None else ""


def ksa_name(stack: str) -> str:
    """The Kubernetes service account of a platform: unique per platform stack, so is its Workload Identity."""
    return project_name(KSA_PREFIX, stack, 63)


def project_name(prefix: str, stack: str, max_len: int = 30) -> str:
    """A project-wide resource id: lowercase letters, digits and hyphens, starting with a letter."""
    raw = re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{stack}".lower()).strip("-")
    return raw[:max_len].rstrip("-")


class Platform(pulumi.ComponentResource):
    """GKE Autopilot cluster + bucket + identities + registry + kubeconfig; `.outputs` for experiments."""

    cluster: gcp.container.Cluster
    bucket: gcp.storage.Bucket
    service_account: gcp.serviceaccount.Account
    repository: gcp.artifactregistry.Repository
    k8s_provider: k8s.Provider
    kubeconfig: Output[str]
    outputs: PlatformOutputs

    def __init__(self, name: str, args: PlatformArgs, opts: ResourceOptions | None = None) -> None:
        super().__init__("etude:index:Platform", name, None, opts)
        s = args.settings
        child = ResourceOptions(parent=self)

        apis = [
            gcp.projects.Service(f"{name}-api-{api.split('.')[0]}", service=api, project=args.project,
                                 disable_on_destroy=False, opts=child)
            for api in APIS
        ]
        after_apis = ResourceOptions(parent=self, depends_on=apis)

        self.cluster = gcp.container.Cluster(
            f"{name}-cluster",
            project=args.project,
            location=args.region,  # a region: a regional control plane and nodes across its zones
            enable_autopilot=True,
            release_channel=gcp.container.ClusterReleaseChannelArgs(channel=s.release_channel),
            workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(
                workload_pool=f"{args.project}.svc.id.goog"),
            deletion_protection=s.deletion_protection,
            opts=ResourceOptions.merge(after_apis, ResourceOptions(
                custom_timeouts=pulumi.CustomTimeouts(create="40m", update="40m", delete="40m"))),
        )

        lifecycle = [] if s.results_retention_days == 0 else [gcp.storage.BucketLifecycleRuleArgs(
            action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
            condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                age=s.results_retention_days, matches_prefixes=[RESULTS_PREFIX]),
        )]
        self.bucket = gcp.storage.Bucket(
            f"{name}-results",
            project=args.project,
            location=args.region,
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            lifecycle_rules=lifecycle,
            force_destroy=not s.deletion_protection,  # `pulumi destroy -s dev` empties it once protection is off
            opts=after_apis,
        )

        self.service_account = gcp.serviceaccount.Account(
            f"{name}-runner",
            project=args.project,
            account_id=project_name("etude", args.stack),
            display_name=f"ETUDE experiments ({args.stack}): results bucket only",
            opts=after_apis,
        )
        gsa_member = self.service_account.email.apply(lambda e: f"serviceAccount:{e}")
        bucket_access = gcp.storage.BucketIAMMember(
            f"{name}-results-access", bucket=self.bucket.name, role=BUCKET_ROLE, member=gsa_member, opts=child)

        self.repository = gcp.artifactregistry.Repository(
            f"{name}-images",
            project=args.project,
            location=args.region,
            repository_id=project_name("etude", args.stack, 63),
            format="DOCKER",
            description="ETUDE serving and load-generation images",
            opts=after_apis,
        )
        # Autopilot nodes run as the Compute Engine default service account unless told otherwise: let them pull.
        number = gcp.organizations.get_project_output(project_id=args.project).number
        gcp.artifactregistry.RepositoryIamMember(
            f"{name}-images-pull",
            project=args.project,
            location=args.region,
            repository=self.repository.repository_id,
            role="roles/artifactregistry.reader",
            member=number.apply(lambda n: f"serviceAccount:{n}-compute@developer.gserviceaccount.com"),
            opts=child,
        )

        self.kubeconfig = Output.secret(Output.all(self.cluster.name, self.cluster.endpoint,
                                                   self.cluster.master_auth.cluster_ca_certificate).apply(
            lambda a: gke_kubeconfig(f"gke_{args.project}_{args.region}_{a[0]}", a[1], a[2] or "")))
        self.k8s_provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig, opts=child)
        k8s_opts = ResourceOptions(parent=self, provider=self.k8s_provider)

        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=s.namespace, labels={
                "app.kubernetes.io/part-of": "etude",
                "pod-security.kubernetes.io/enforce": "restricted",
            }),
            opts=k8s_opts,
        )
        # Workload Identity: the KSA `<namespace>/etude-runner-<stack>` may act as the bucket-only service account.
        ksa_id = ksa_name(args.stack)
        wi_binding = gcp.serviceaccount.IAMMember(
            f"{name}-workload-identity",
            service_account_id=self.service_account.name,
            role="roles/iam.workloadIdentityUser",
            member=f"serviceAccount:{args.project}.svc.id.goog[{s.namespace}/{ksa_id}]",
            opts=ResourceOptions(parent=self, depends_on=[self.cluster]),  # the identity pool comes with it
        )
        ksa = k8s.core.v1.ServiceAccount(
            f"{name}-ksa",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=ksa_id,
                namespace=namespace.metadata.name,
                annotations={"iam.gke.io/gcp-service-account": self.service_account.email},
            ),
            # Pods that use this KSA may rely on the bucket grant and the binding being in place.
            opts=ResourceOptions.merge(k8s_opts, ResourceOptions(depends_on=[wi_binding, bucket_access])),
        )

        self.outputs = PlatformOutputs(
            kubeconfig=self.kubeconfig,
            bucket=self.bucket.name,
            namespace=namespace.metadata.name,
            service_account=ksa.metadata.name,
            registry=Output.concat(args.region, "-docker.pkg.dev/", args.project, "/", self.repository.repository_id),
            project=Output.from_input(args.project),
        )
        self.stack_outputs: dict[str, object] = {
            "kubeconfig": self.kubeconfig,
            "bucket": self.outputs.bucket,
            "namespace": self.outputs.namespace,
            "serviceAccount": self.outputs.service_account,
            "registry": self.outputs.registry,
            "project": args.project,
            "region": args.region,
            "clusterName": self.cluster.name,
            "gsaEmail": self.service_account.email,
        }
        self.register_outputs(self.stack_outputs)
