"""Run the Pulumi program of a stack under Pulumi's mocks: what it would declare, without cloud or Pulumi CLI.

    python -m etude.infra.mockrun fashion                    # a summary: resources by type, stack outputs
    python -m etude.infra.mockrun fashion --json out.json    # everything: resources with inputs, parents, dependencies

Config comes from `Pulumi.<stack>.yaml` (`--set key=value` overrides or adds a value; values are YAML).
A use-case stack's StackReference to its platform answers with `MOCK_PLATFORM`; the results reader answers
with a made-up summary per variant (`mock_summary`). The tests run every stack file through this module.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import json
import logging
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from etude.results import Latency, RunSpec, Summary
from etude.spec import PROJECT_DIR, Experiment, SpecError, stack_file

MAIN = PROJECT_DIR / "__main__.py"
MOCK_PROJECT = "mock-project"
MOCK_REGION = "europe-west4"
MOCK_PLATFORM = {
    "kubeconfig": "apiVersion: v1\nkind: Config\n",
    "bucket": "etude-results-mock",
    "namespace": "etude",
    "serviceAccount": "etude-runner-dev",
    "registry": f"{MOCK_REGION}-docker.pkg.dev/{MOCK_PROJECT}/etude-dev",
    "project": MOCK_PROJECT,
    "region": MOCK_REGION,
    "clusterName": "etude-cluster-mock",
}
RESULTS_TYPE = "pulumi-python:dynamic/etude:VariantResults"
_SIG, _SECRET_SIG = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"  # Pulumi's RPC secret marker


def mock_summary(exp: Experiment, key: str) -> Summary:
    """A plausible summary.json for variant `key`, different per variant (index-dependent latencies)."""
    index, variant = next((i, v) for i, v in enumerate(exp.variants) if v.key == key)
    sc = exp.scenario
    lat = Latency(p50=5.0 + index, p90=20.0 + 3 * index, p95=30.0 + 4 * index, p99=40.0 + 5 * index,
                  max=90.0 + index)
    return Summary(
        spec=RunSpec(stack=exp.stack, run_id=exp.run_id, variant=key, model=variant.model_label,
                     runtime=variant.runtime, instance_type=variant.instance_type, replicas=variant.replicas,
                     monthly_usd=exp.monthly_usd(variant), url="http://mock:8080", catalog_size=sc.catalog_size,
                     target_rps=sc.target_rps, ramp_seconds=sc.ramp_seconds, hold_seconds=sc.hold_seconds,
                     workload={}, seed=sc.seed, slo_ms=sc.slo.latency_ms, slo_percentile=sc.slo.percentile),
        started_at="2026-01-01T00:00:00Z",
        duration_s=float(sc.ramp_seconds + sc.hold_seconds),
        requests=1000 * (index + 1),
        ok=1000 * (index + 1) - index,
        errors={"503": index} if index else {},
        held_back=0,
        achieved_rps=float(sc.target_rps) - index,
        latency_ms=lat,
        latency_from_intended_ms=lat,
        slo_met=index % 2 == 0,  # alternating, so that the cheapest-within-SLO choice is exercised
        capacity_rps=float(sc.target_rps) if index % 2 == 0 else float(sc.target_rps) - 2 * index,
    )


def _plain(value: Any) -> Any:
    """Deserialized RPC values (secrets, unknowns, resource references) as plain JSON-able data."""
    if isinstance(value, dict):
        if value.get(_SIG) == _SECRET_SIG:
            return {"secret": _plain(value.get("value"))}
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def run(stack: str, overrides: dict[str, Any] | None = None, *, preview: bool = False) -> dict[str, Any]:
    """Run `__main__.py` for `stack` under mocks (as `pulumi up`, or as `pulumi preview` with `preview`);
    returns resources, stack outputs, engine log messages, error and loaded modules."""
    import pulumi
    from pulumi.runtime import mocks, rpc, settings
    from pulumi.runtime.stack import run_in_stack

    from etude.components.results import metrics_from_summary
    from etude.infra.config import read_config

    doc = yaml.safe_load(stack_file(stack).read_text()) or {}
    config: dict[str, Any] = dict(doc.get("config") or {})
    for key, value in (overrides or {}).items():  # None removes a key
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    try:
        experiment = read_config(stack, config).experiment
    except SpecError:
        experiment = None  # the program itself reports it

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
            state = dict(args.inputs)
            typ, name = args.typ, args.name
            if typ == "gcp:container/cluster:Cluster":
                ca = base64.b64encode(b"mock-ca").decode()
                state |= {"name": f"{name}-mock", "endpoint": "203.0.113.10",
                          "masterAuth": {"clusterCaCertificate": ca}}
            elif typ == "gcp:storage/bucket:Bucket":
                state |= {"name": f"{name}-mock", "url": f"gs://{name}-mock"}
            elif typ == "gcp:serviceaccount/account:Account":
                email = f"{args.inputs['accountId']}@{args.inputs.get('project')}.iam.gserviceaccount.com"
                state |= {"email": email, "name": f"projects/{args.inputs.get('project')}/serviceAccounts/{email}"}
            elif typ == "pulumi:pulumi:StackReference":
                state = {"name": args.inputs.get("name"), "outputs": MOCK_PLATFORM, "secretOutputNames": ["kubeconfig"]}
            elif typ == "docker-build:index:Image":
                digest = "sha256:" + "0" * 64
                state |= {"ref": f"{args.inputs['tags'][0]}@{digest}", "digest": digest}
            elif typ.startswith("kubernetes:") and not typ.startswith("kubernetes:index:"):
                meta = dict(state.get("metadata") or {})
                state["metadata"] = {"name": name, **meta, "uid": f"uid-{name}"}
            elif typ == RESULTS_TYPE:
                uri = args.inputs["results_uri"]
                assert experiment is not None
                summary = mock_summary(experiment, uri.rstrip("/").rsplit("/", 1)[-1])
                state["metrics"] = metrics_from_summary(summary, results_uri=uri,
                                                        monthly_usd=float(args.inputs["monthly_usd"]))
            return f"{name}-id", state

        def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
            if args.token == "gcp:organizations/getClientConfig:getClientConfig":
                return {"accessToken": "mock-token", "project": MOCK_PROJECT}, []
            if args.token == "gcp:organizations/getProject:getProject":
                return {"number": "123456789012", "projectId": args.args.get("projectId") or MOCK_PROJECT}, []
            return {}, []

    records: list[dict[str, Any]] = []
    outputs: dict[str, Any] = {}

    class Monitor(mocks.MockMonitor):
        def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - the gRPC method's name
            response = super().RegisterResource(request)
            if request.type != "pulumi:pulumi:Stack":
                records.append({
                    "type": request.type,
                    "name": request.name,
                    "urn": response.urn,
                    "custom": request.custom,
                    "parent": request.parent,
                    "dependencies": list(request.dependencies),
                    "provider": request.provider,
                    "customTimeouts": {"create": request.customTimeouts.create,
                                       "update": request.customTimeouts.update},
                    "inputs": _plain(rpc.deserialize_properties(request.object)),
                    "state": _plain(self.resources[response.urn].state) if response.urn in self.resources else None,
                })
            return response

        def ReadResource(self, request: Any) -> Any:  # noqa: N802 - StackReference is read, not registered
            response = super().ReadResource(request)
            records.append({
                "type": request.type, "name": request.name, "urn": response.urn, "custom": True,
                "parent": request.parent, "dependencies": list(request.dependencies), "provider": request.provider,
                "customTimeouts": {}, "inputs": _plain(rpc.deserialize_properties(request.properties)),
                "state": _plain(self.resources[response.urn].state),
            })
            return response

        def RegisterResourceOutputs(self, request: Any) -> Any:  # noqa: N802
            if "::pulumi:pulumi:Stack::" in request.urn:
                outputs.update(_plain(rpc.deserialize_properties(request.outputs)))
            return super().RegisterResourceOutputs(request)

    logs: list[dict[str, Any]] = []  # what the program said through pulumi.log (the engine prints it)

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logs.append({"level": record.levelname.lower(), "message": record.getMessage(),
                         "resources_before": len(records)})

    engine_log = logging.getLogger("etude.mockrun.engine")
    engine_log.propagate = False
    engine_log.setLevel(logging.INFO)  # the engine shows info and above by default
    engine_log.addHandler(Collect())

    m = Mocks()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.set_mocks(m, project="etude", stack=stack, preview=preview, monitor=Monitor(m),
                             organization="organization", logger=engine_log)
    pulumi.runtime.set_all_config({k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()})
    settings.set_root_resource(None)  # type: ignore[arg-type]  # run_in_stack makes the stack resource, as `pulumi up` does
    error = None

    def program() -> None:
        runpy.run_path(str(MAIN), run_name="__main__")

    try:
        loop.run_until_complete(run_in_stack(program))
    except Exception as err:  # noqa: BLE001 - reported to the caller
        error = f"{type(err).__name__}: {err}"
        if os.environ.get("ETUDE_MOCKRUN_TRACEBACK"):
            traceback.print_exc()
    finally:
        loop.close()
    return {
        "stack": stack,
        "error": error,
        "resources": records,
        "outputs": outputs,
        "logs": logs,
        "modules": sorted(sys.modules),
    }


_PENDING: dict[str, tuple[subprocess.Popen[str], Path]] = {}
_DONE: dict[str, dict[str, Any]] = {}


@atexit.register
def _stop_pending() -> None:
    """Runs started but never collected (a partial test selection) end with this process, leaving nothing."""
    for proc, out in _PENDING.values():
        proc.kill()
        proc.communicate()
        shutil.rmtree(out.parent, ignore_errors=True)
    _PENDING.clear()


def _key(stack: str, overrides: dict[str, Any] | None, preview: bool) -> str:
    return json.dumps([stack, overrides or {}, preview], sort_keys=True)


def start(stack: str, overrides: dict[str, Any] | None = None, *, preview: bool = False) -> None:
    """Start `run(stack, overrides)` in a fresh interpreter (a clean Pulumi runtime, an honest sys.modules)."""
    key = _key(stack, overrides, preview)
    if key in _PENDING or key in _DONE:
        return
    out = Path(tempfile.mkdtemp(prefix="etude-mockrun-")) / "run.json"
    argv = [sys.executable, "-m", "etude.infra.mockrun", stack, "--json", str(out), "--quiet"]
    argv += ["--preview"] * preview
    for name, value in (overrides or {}).items():
        argv += ["--set", f"{name}={json.dumps(value)}"]  # JSON is YAML
    proc = subprocess.Popen(argv, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _PENDING[key] = (proc, out)


def result(
    stack: str, overrides: dict[str, Any] | None = None, *, preview: bool = False, timeout_s: float = 180
) -> dict[str, Any]:
    """The result of a `start`ed (or, if not yet, started now) run; cached per (stack, overrides, preview)."""
    key = _key(stack, overrides, preview)
    start(stack, overrides, preview=preview)
    if key not in _DONE:
        proc, out = _PENDING.pop(key)
        _, stderr = proc.communicate(timeout=timeout_s)
        if not out.is_file():
            what = f"{stack} {overrides or ''}".strip()
            raise RuntimeError(f"mock run of {what} crashed (exit {proc.returncode}): {stderr[-3000:]}")
        _DONE[key] = json.loads(out.read_text())
        shutil.rmtree(out.parent, ignore_errors=True)
    return _DONE[key]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m etude.infra.mockrun", description=__doc__.split("\n")[0])
    parser.add_argument("stack")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    parser.add_argument("--json", type=Path, help="write the full result here")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--preview", action="store_true", help="run as `pulumi preview` (unknown outputs)")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    outcome = run(args.stack, overrides, preview=args.preview)
    if args.json:
        args.json.write_text(json.dumps(outcome, indent=1, default=str))
    if not args.quiet:
        counts = Counter(r["type"] for r in outcome["resources"])
        for typ, n in sorted(counts.items()):
            print(f"{n:4d}  {typ}")
        print(json.dumps(outcome["outputs"], indent=1, default=str))
    if outcome["error"]:
        print(f"error: {outcome['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
