"""`rtphelper config`: a bad hosts.yaml or runtime.env value is one line naming the place, exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtpcore.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "hosts.yaml.example"


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("RTPHELPER_"):
            monkeypatch.delenv(key)


def test_example_config_is_valid(tmp_path: Path, capsys) -> None:
    code = main(["config", "--config", str(EXAMPLE), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["settings"]["RTPHELPER_STORAGE_MODE"] == "s3" and doc["hosts"]
    assert all(h["interfaces"] for h in doc["hosts"])


def test_host_without_interface(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "hosts.yaml"
    bad.write_text("""rpcap: {default_port: 2002, auth_mode: null}
settings: {default_capture_root: /tmp/captures}
environments:
  PRD:
    regions:
      EU:
        sub-region:
          eu-west-1:
            hosts:
              - {id: prd-x, address: 192.0.2.10, description: x, interfaces: []}
""")
    code = main(["config", "--config", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "environments.PRD.regions.EU.sub-region.eu-west-1.hosts[0] (prd-x): needs at least one interface" in err


def test_bad_runtime_env_value(tmp_path: Path, capsys) -> None:
    env = tmp_path / "runtime.env"
    env.write_text("# sizes\nRTPHELPER_STORAGE_MODE=local\nRTPHELPER_ROLLING_PCAP_MAX_BYTES=5XB\n")
    code = main(["config", "--config", str(EXAMPLE), "--env-file", str(env)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{env} line 3: RTPHELPER_ROLLING_PCAP_MAX_BYTES='5XB' is not a size" in err


def test_missing_hosts_file(tmp_path: Path, capsys) -> None:
    code = main(["config", "--config", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.yaml" in err and "hosts.yaml.example" in err


def test_deeply_nested_hosts_yaml_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "hosts.yaml"
    bad.write_text("environments: " + "[" * 3000 + "]" * 3000 + "\n")
    code = main(["config", "--config", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and "RecursionError" not in err
    assert f"{bad} line 1, column " in err and "nested more than 32 levels deep" in err


def test_port_true_exits_2_naming_the_host(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "hosts.yaml"
    bad.write_text(EXAMPLE.read_text().replace("interfaces:", "port: true\n                interfaces:", 1))
    assert "port: true" in bad.read_text()
    code = main(["config", "--config", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "hosts[0] (" in err and "port true is not a port number" in err


@pytest.mark.parametrize(("line", "expected"), [
    ("RTPHELPER_S3_POOL_CAPTURE=true", "RTPHELPER_S3_POOL_CAPTURE='true' is not a whole number"),
    ("RTPHELPER_S3_POOL_CAPTURE=2.5", "RTPHELPER_S3_POOL_CAPTURE='2.5' is not a whole number"),
    ("RTPHELPER_S3_MULTIPART_USE_THREADS=2", "RTPHELPER_S3_MULTIPART_USE_THREADS='2' is not a boolean"),
    ("RTPHELPER_S3_READ_TIMEOUT_SECONDS=yes", "RTPHELPER_S3_READ_TIMEOUT_SECONDS='yes' is not a number of seconds"),
])
def test_settings_ints_and_booleans_are_strict(tmp_path: Path, capsys, line: str, expected: str) -> None:
    env = tmp_path / "runtime.env"
    env.write_text(f"RTPHELPER_STORAGE_MODE=local\n{line}\n")
    code = main(["config", "--config", str(EXAMPLE), "--env-file", str(env)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{env} line 2: {expected}" in err
