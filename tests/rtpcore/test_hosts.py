"""hosts.yaml: the seed's schema, its rules, and error messages that point at the exact place."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from rtpcore.errors import ConfigError
from rtpcore.hosts import HostsConfig, capture_root, load_hosts
from rtpcore.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "hosts.yaml.example"

BASE = """\
rpcap:
  default_port: 2002
  auth_mode: null
settings:
  default_capture_root: /srv/captures
environments:
  PRD:
    regions:
      EU:
        sub-region:
          eu-west-1:
            hosts:
              - id: prd-x
                address: 192.0.2.1
                description: node x
                interfaces: ["pkt0"]
              - id: prd-y
                address: 2001:DB8::10
                description: node y
                interfaces: ["pkt0", "pkt1"]
                port: 3002
          eu-central-1:
            hosts:
              - id: prd-z
                address: media-z.example.net
                interfaces: ens5
      US:
        sub-region:
          us-east-1:
            hosts:
              - id: prd-u
                address: 198.51.100.7
                description: node u
                interfaces: ["eth0"]
                auth: {auth_mode: password, username: cap, password: s3cret}
  QA:
    regions:
      EU:
        sub-region:
          eu-west-1:
            hosts:
              - id: prd-x
                address: 198.51.100.9
                interfaces: ["ens5"]
  STG:
    regions:
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_hosts(write(tmp_path, text))
    return str(info.value)


def test_shipped_example_loads_and_matches_its_yaml() -> None:
    config = load_hosts(EXAMPLE)
    raw = yaml.safe_load(EXAMPLE.read_text())
    assert config.environments_names() == list(raw["environments"])
    for env, body in raw["environments"].items():
        expected = [h["id"] for region in (body["regions"] or {}).values()
                    for sub in region["sub-region"].values() for h in sub["hosts"]]
        assert [h.id for h in config.hosts(env)] == expected
    for entry in config.hosts("PRD"):
        assert entry.address.startswith(("192.0.2.", "198.51.100.")), "example must use documentation addresses"


def test_hosts_entries_carry_place_effective_port_and_auth(tmp_path: Path) -> None:
    config = load_hosts(write(tmp_path, BASE))
    hosts = config.hosts("PRD")
    assert [(h.region, h.sub_region, h.id, h.port) for h in hosts] == [
        ("EU", "eu-west-1", "prd-x", 2002), ("EU", "eu-west-1", "prd-y", 3002),
        ("EU", "eu-central-1", "prd-z", 2002), ("US", "us-east-1", "prd-u", 2002)]
    y = config.find_host("PRD", "prd-y")
    assert y.address == "2001:db8::10" and y.interfaces == ("pkt0", "pkt1") and y.env == "PRD"
    assert config.find_host("PRD", "prd-z").interfaces == ("ens5",)  # a bare string is one interface
    x = config.find_host("PRD", "prd-x")
    assert x.auth.mode == "null" and x.label == "EU-prd-x"
    u = config.find_host("PRD", "prd-u")
    assert (u.auth.mode, u.auth.username, u.auth.password) == ("password", "cap", "s3cret")
    assert "s3cret" not in repr(u)
    assert config.hosts("STG") == []


def test_region_and_sub_region_filters(tmp_path: Path) -> None:
    config = load_hosts(write(tmp_path, BASE))
    assert [h.id for h in config.hosts("PRD", regions=["US"])] == ["prd-u"]
    assert [h.id for h in config.hosts("PRD", sub_regions=["eu-central-1"])] == ["prd-z"]
    assert [h.id for h in config.hosts("PRD", regions=["EU"], sub_regions=["eu-west-1"])] == ["prd-x", "prd-y"]
    assert config.regions_names("PRD") == ["EU", "US"]
    assert config.sub_regions_names("PRD") == ["eu-west-1", "eu-central-1", "us-east-1"]
    assert config.sub_regions_names("PRD", ["US"]) == ["us-east-1"]


def test_unknown_names_list_the_known_ones(tmp_path: Path) -> None:
    config = load_hosts(write(tmp_path, BASE))
    with pytest.raises(ConfigError, match=r"^unknown host 'x' in environment PRD; known: prd-x, prd-y, prd-z, prd-u$"):
        config.find_host("PRD", "x")
    with pytest.raises(ConfigError, match=r"^unknown environment 'DEV' in hosts.yaml; known: PRD, QA, STG$"):
        config.hosts("DEV")
    with pytest.raises(ConfigError, match=r"^unknown region 'APAC' in environment PRD; known: EU, US$"):
        config.hosts("PRD", regions=["APAC"])
    with pytest.raises(ConfigError, match=r"^unknown sub-region 'us-east-1' in environment PRD regions EU; known: eu-west-1, eu-central-1$"):
        config.hosts("PRD", regions=["EU"], sub_regions=["us-east-1"])
    with pytest.raises(ConfigError, match=r"^unknown host 'prd-x' in environment STG; known: \(none\)$"):
        config.find_host("STG", "prd-x")


def test_host_without_interface_has_the_exact_message(tmp_path: Path) -> None:
    text = BASE.replace('interfaces: ["pkt0"]\n              - id: prd-y', 'interfaces: []\n              - id: prd-y')
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_hosts(path)
    assert str(info.value) == f"{path}: environments.PRD.regions.EU.sub-region.eu-west-1.hosts[0] (prd-x): needs at least one interface"
    missing = BASE.replace('                interfaces: ["eth0"]\n', "")
    assert load_error(tmp_path, missing).endswith(
        "environments.PRD.regions.US.sub-region.us-east-1.hosts[0] (prd-u): needs at least one interface")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('interfaces: ["eth0"]', 'interfaces: ["eth0", " "]',
         "environments.PRD.regions.US.sub-region.us-east-1.hosts[0] (prd-u): interfaces[1] must be a non-empty interface name"),
        ("                address: 198.51.100.7\n", "",
         "environments.PRD.regions.US.sub-region.us-east-1.hosts[0] (prd-u): missing 'address'"),
        ("address: 198.51.100.7", "adress: 198.51.100.7",
         "environments.PRD.regions.US.sub-region.us-east-1.hosts[0] (prd-u): unknown key 'adress' (did you mean 'address'?)"),
        ("port: 3002", "port: 70000",
         "environments.PRD.regions.EU.sub-region.eu-west-1.hosts[1] (prd-y): port: Input should be less than or equal to 65535"),
        ("address: 198.51.100.7", "address: 'not an address!'",
         "hosts[0] (prd-u): address 'not an address!' is neither an IP address nor a host name"),
        ("id: prd-u", "id: prd/u",
         "hosts[0] (prd/u): id 'prd/u' may use only letters, digits, '.', '_' and '-' (it names capture files)"),
        ("{auth_mode: password, username: cap, password: s3cret}", "{auth_mode: password, username: cap}",
         "hosts[0] (prd-u): auth_mode password needs both username and password"),
        ("auth_mode: null\nsettings", "auth_mode: kerberos\nsettings",
         "rpcap.auth_mode: Input should be 'null' or 'password'"),
        ("  default_port: 2002", "  default_port: 0", "rpcap.default_port: Input should be greater than or equal to 1"),
        ("    regions:\n      EU:\n        sub-region:\n          eu-west-1:\n            hosts:\n              - id: prd-x\n                address: 198.51.100.9",
         "    region:\n      EU:\n        sub-region:\n          eu-west-1:\n            hosts:\n              - id: prd-x\n                address: 198.51.100.9",
         "environments.QA: unknown key 'region' (did you mean 'regions'?)"),
        ("sub-region:\n          us-east-1", "subregion:\n          us-east-1",
         "environments.PRD.regions.US: unknown key 'subregion' (did you mean 'sub-region'?)"),
    ],
)
def test_validation_errors_name_the_place(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in BASE
    message = load_error(tmp_path, BASE.replace(old, new, 1))
    assert message.startswith(f"{tmp_path / 'hosts.yaml'}: ")
    assert message.endswith(expected)


def test_duplicate_host_ids_within_an_environment(tmp_path: Path) -> None:
    text = BASE.replace("- id: prd-u", "- id: prd-x")
    assert load_error(tmp_path, text) == (
        f"{tmp_path / 'hosts.yaml'}: environments.PRD: duplicate host id 'prd-x' at "
        "regions.EU.sub-region.eu-west-1.hosts[0] and regions.US.sub-region.us-east-1.hosts[0]")
    # The same id in another environment is fine (QA already reuses prd-x in BASE).
    assert load_hosts(write(tmp_path, BASE)).find_host("QA", "prd-x").address == "198.51.100.9"


def test_repeated_yaml_key_is_an_error_with_lines(tmp_path: Path) -> None:
    text = BASE.replace("  STG:\n", "  QA:\n    regions: {}\n  STG:\n")
    qa_lines = [n for n, line in enumerate(text.splitlines(), 1) if line == "  QA:"]
    assert load_error(tmp_path, text) == f"{tmp_path / 'hosts.yaml'} line {qa_lines[1]}: key 'QA' repeats line {qa_lines[0]}"


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    text = textwrap.dedent("""\
        rpcap:
          default_port: 2002
        environments:
          PRD:
            regions: {EU: [unclosed
        """)
    message = load_error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'hosts.yaml'} line 6, column 1: YAML syntax error:")


def test_missing_empty_and_wrong_shape_files(tmp_path: Path) -> None:
    missing = tmp_path / "config" / "hosts.yaml"
    with pytest.raises(ConfigError) as info:
        load_hosts(missing)
    assert str(info.value) == f"{missing}: not found; copy config/hosts.yaml.example to config/hosts.yaml"
    assert load_error(tmp_path, "# nothing\n").endswith("hosts.yaml: empty; copy config/hosts.yaml.example to config/hosts.yaml")
    assert load_error(tmp_path, "- a\n- b\n").endswith(
        "hosts.yaml: expected a mapping with rpcap, settings and environments, got list")
    assert load_error(tmp_path, "rpcap: {}\n").endswith("hosts.yaml: top level: missing 'environments'")


def test_minimal_file_uses_rpcap_defaults(tmp_path: Path) -> None:
    config = load_hosts(write(tmp_path, "environments:\n  LAB:\n    regions:\n      R:\n        sub-region:\n"
                                        "          s:\n            hosts:\n              - {id: h1, address: 192.0.2.5, interfaces: [lo]}\n"))
    entry = config.find_host("LAB", "h1")
    assert (entry.port, entry.auth.mode, entry.description) == (2002, "null", "")


def test_capture_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = load_hosts(write(tmp_path, BASE))
    assert config.capture_root(Settings()) == Path("/srv/captures")
    override = load_settings({"RTPHELPER_CAPTURE_ROOT": "/data/caps"}, base_dir=tmp_path)
    assert config.capture_root(override) == Path("/data/caps")
    assert capture_root(override, None) == Path("/data/caps")
    no_root = HostsConfig.model_validate({"environments": {}, "settings": {"default_capture_root": "~/caps"}})
    assert no_root.capture_root(None) == tmp_path / "home" / "caps"
    assert capture_root(Settings(), None) == tmp_path / "home" / "Downloads"


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("port: 3002", "port: true", "hosts[1] (prd-y): port true is not a port number"),
    ("port: 3002", "port: '3002'", "hosts[1] (prd-y): port \"3002\" is not a port number"),
    ("port: 3002", "port: 3002.5", "hosts[1] (prd-y): port 3002.5 is not a port number"),
    ("  default_port: 2002", "  default_port: yes", "rpcap: default_port true is not a port number"),
])
def test_port_must_be_a_whole_number_not_a_boolean(tmp_path: Path, old: str, new: str, expected: str) -> None:
    """YAML turns `true`/`yes` into a bool that int() would read as port 1: refused, naming the place."""
    message = load_error(tmp_path, BASE.replace(old, new, 1))
    assert message.startswith(f"{tmp_path / 'hosts.yaml'}: ") and expected in message
    assert message.endswith("(write a whole number 1-65535, e.g. 2002, without quotes)") and "\n" not in message


@pytest.mark.parametrize("text", [
    "[" * 3000 + "]" * 3000,
    "environments: " + "{a: " * 3000 + "1" + "}" * 3000,
    "environments:\n" + "".join("  " * depth + f"k{depth}:\n" for depth in range(1, 3001)),
])
def test_yaml_nested_thousands_deep_is_a_one_line_error(tmp_path: Path, text: str) -> None:
    """PyYAML recurses per nesting level: without a limit this was a RecursionError (exit 1)."""
    message = load_error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'hosts.yaml'} line ") and "\n" not in message
    assert "nested more than 32 levels deep" in message


def test_the_depth_limit_leaves_room_for_real_files(tmp_path: Path) -> None:
    """The real schema nests 9 levels; a host's auth block in flow style adds one more."""
    config = load_hosts(write(tmp_path, BASE))
    assert config.find_host("PRD", "prd-u").auth.mode == "password"
