"""`etude import-recbole`: checkpoints as RecBole 1.2.1's own Trainer saves them, served as a built-in model is.

Each of the ten models: RecBole's model from its default config with random weights, saved by RecBole's
`Trainer._save_checkpoint`, imported (no RecBole code runs in the import), loaded by the server's loader, served
over loopback; the served top-21 equals RecBole's `full_sort_predict` top-21 (ties aside) for sessions of 1, 2,
7, 49, 50 and 60 items. Bad files get one-line errors and nothing in a file runs.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from recbole_reference import RECBOLE_MODELS, recbole_model, same_ranking, save_like_trainer, sessions
from test_serving import live_server, run

from etude.cli import main
from etude.errors import UsageError
from etude.models.recbole_import import import_recbole, read_checkpoint
from etude.results import SUMMARY_FILE
from etude.serving.model import load_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

C = 300  # d = 5 is odd: RecBole's two heads would not divide it, so the attention models get C = 1000 (d = 6)


def catalog_for(name: str) -> int:
    return 1000 if name in ("SASRec", "GCSAN", "CORE", "LightSANs") else C


@pytest.mark.slow
@pytest.mark.parametrize("name", RECBOLE_MODELS)
def test_imported_checkpoint_serves_recbole_ranking(tmp_path: Path, name: str) -> None:
    catalog = catalog_for(name)
    net, config = recbole_model(name, catalog, seed=4)
    ckpt = save_like_trainer(net, config, tmp_path / f"{name}-Dec-01-2026.pth")
    out = tmp_path / "served" / f"{name.lower()}.pt"
    assert main(["import-recbole", str(ckpt), "--out", str(out)]) == 0
    rows = sessions(catalog, seed=5)

    async def body() -> list[list[int]]:
        module = load_model(str(out), "cpu")  # the server's loader: it checks the contract
        assert module.catalog_size == catalog and module.max_session_length == 50
        async with live_server(module, max_batch_size=4) as live:
            answers = []
            for s in rows:
                async with live.http.post(f"{live.url}/v1/recommend", json={"session": s, "k": 21}) as r:
                    assert r.status == 200, await r.text()
                    answers.append((await r.json())["items"])
            return answers

    for s, got in zip(rows, run(body(), timeout_s=120), strict=True):
        assert same_ranking(got, net, s), f"{name}, session of {len(s)}"


@pytest.mark.slow
def test_checkpoint_reads_without_recbole_and_maps_its_classes_to_data(tmp_path: Path) -> None:
    net, config = recbole_model("GRU4Rec", C)
    data = save_like_trainer(net, config, tmp_path / "g.pth").read_bytes()
    code = (
        "import sys, builtins\n"
        "real = builtins.__import__\n"
        "def no_recbole(name, *a, **k):\n"
        "    if name.split('.')[0] == 'recbole': raise ImportError('recbole is not installed')\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = no_recbole\n"
        "from etude.models.recbole_import import read_checkpoint\n"
        f"ck = read_checkpoint(open({str(tmp_path / 'g.pth')!r}, 'rb').read(), 'g.pth')\n"
        "shape = tuple(ck.state_dict['item_embedding.weight'].shape)\n"
        "print(ck.recbole_model, ck.config['MAX_ITEM_LIST_LENGTH'], shape)\n"
        "assert not any(m.startswith('recbole') for m in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["GRU4Rec", "50", f"({C + 1},", "5)"]
    ckpt = read_checkpoint(data, "g.pth")
    assert ckpt.config["hidden_size"] == 10 and ckpt.config["model"] == "GRU4Rec"
    assert torch.equal(ckpt.state_dict["item_embedding.weight"], net.state_dict()["item_embedding.weight"])


class Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("touch pwned",)


def test_a_pickle_that_would_run_code_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "evil.pth"
    torch.save({"config": Exploit(), "state_dict": {}}, bad)
    monkeypatch.chdir(tmp_path)
    assert main(["import-recbole", str(bad), "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "refusing to unpickle" in err and "system" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "m.pt").exists()
    plain = tmp_path / "plain.pkl"  # a plain pickle (not torch's zip format) is read restricted too
    plain.write_bytes(pickle.dumps({"config": Exploit()}))
    with pytest.raises(UsageError, match="refusing to unpickle"):
        import_recbole(str(plain), "jit", str(tmp_path / "m.pt"))
    assert not (tmp_path / "pwned").exists()


def test_unsupported_model_option_or_file_is_one_line_naming_it(tmp_path: Path) -> None:
    net, config = recbole_model("CORE", 1000)
    config.final_config_dict["dnn_type"] = "ave"
    ckpt = save_like_trainer(net, config, tmp_path / "core.pth")
    with pytest.raises(UsageError, match=r"dnn_type='ave' is not supported"):
        import_recbole(str(ckpt), "jit", str(tmp_path / "m.pt"))
    config.final_config_dict["model"] = "BERT4Rec"
    ckpt = save_like_trainer(net, config, tmp_path / "bert.pth")
    with pytest.raises(UsageError, match=r"RecBole model 'BERT4Rec' is not supported; supported: GRU4Rec"):
        import_recbole(str(ckpt), "jit", str(tmp_path / "m.pt"))
    config.final_config_dict["model"] = "SASRec"  # CORE's weights under SASRec's name
    ckpt = save_like_trainer(net, config, tmp_path / "mixed.pth")
    with pytest.raises(UsageError, match=r"do not match RecBole 1.2.1's SASRec .*missing: encoder"):
        import_recbole(str(ckpt), "jit", str(tmp_path / "m.pt"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="junk.pth is not a RecBole checkpoint"):
        import_recbole(str(junk), "jit", str(tmp_path / "m.pt"))
    weights_only = tmp_path / "weights.pth"
    torch.save(net.state_dict(), weights_only)
    with pytest.raises(UsageError, match="expected a dict with 'config' and 'state_dict'"):
        import_recbole(str(weights_only), "jit", str(tmp_path / "m.pt"))
    with pytest.raises(UsageError, match="missing.pth"):
        import_recbole(str(tmp_path / "missing.pth"), "jit", str(tmp_path / "m.pt"))
    assert not (tmp_path / "m.pt").exists()


def test_a_checkpoint_saved_on_a_gpu_loads_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU run pickles cuda storages and config['device'] cuda: the storages are mapped to the CPU."""
    net, config = recbole_model("STAMP", C)
    config.final_config_dict["device"] = torch.device("cuda")
    registry = list(torch.serialization._package_registry)
    torch.serialization.register_package(0, lambda storage: "cuda:0", lambda storage, location: None)
    try:  # every storage is tagged as a GPU run tags it
        ckpt = save_like_trainer(net, config, tmp_path / "gpu.pth")
    finally:
        torch.serialization._package_registry[:] = registry
    assert b"cuda:0" in ckpt.read_bytes()
    read = read_checkpoint(ckpt.read_bytes(), "gpu.pth")
    assert read.state_dict["item_embedding.weight"].device.type == "cpu"
    assert import_recbole(str(ckpt), "jit", str(tmp_path / "m.pt")) is True


def test_import_to_gcs_and_if_missing(tmp_path: Path, gcs_bucket: str) -> None:
    net, config = recbole_model("NARM", C)
    ckpt = save_like_trainer(net, config, tmp_path / "narm.pth")
    uri = f"gs://{gcs_bucket}/models/narm.pt"
    assert main(["import-recbole", str(ckpt), "--runtime", "eager", "--out", uri]) == 0
    assert load_model(uri, "cpu").catalog_size == C
    assert import_recbole(str(ckpt), "jit", uri, if_missing=True) is False


@pytest.mark.slow
def test_etude_local_imports_a_recbole_variant_in_its_export_step(tmp_path: Path) -> None:
    from test_local import Run, free_port, tiny_stack

    net, config = recbole_model("STAMP", 1000)  # the tiny stack's catalog size
    ckpt = save_like_trainer(net, config, tmp_path / "STAMP-Dec-01-2026.pth")
    stack = tiny_stack(tmp_path, f"    - {{recbole: {ckpt}, runtime: jit, instanceType: cpu, name: trained}}")
    out, models = tmp_path / "results", tmp_path / "models"
    run = Run(["--stack", str(stack), "--out", str(out), "--models-dir", str(models), "--port", str(free_port()),
               "--ramp-seconds", "2", "--hold-seconds", "1"], tmp_path)  # fmt: skip
    assert run.finish(timeout_s=120) == 0, run.stderr + run.out
    imported = list(models.glob("recbole-STAMP-Dec-01-2026-*-jit-cpu.pt"))
    assert len(imported) == 1 and list(models.iterdir()) == imported
    assert (out / "tiny" / "t1" / "trained" / SUMMARY_FILE).exists()
