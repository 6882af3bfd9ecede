"""config/hosts.yaml in the seed's schema: RPCAP defaults, capture root, environments → regions → sub-regions → hosts.

Every error names the file and the exact place (`environments.PRD.regions.EU.sub-region.eu-west-1
.hosts[0] (prd-x): needs at least one interface`) so a support engineer can fix it without reading code.
"""
from __future__ import annotations

import difflib
import json
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rtpcore.errors import ConfigError

if TYPE_CHECKING:
    from rtpcore.settings import Settings

DEFAULT_RPCAP_PORT = 2002
DEFAULT_CAPTURE_ROOT = Path("~/Downloads")
COPY_HINT = "copy config/hosts.yaml.example to config/hosts.yaml"

_HOST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}\.?$){_LABEL}(?:\.{_LABEL})*\.?$")

_KNOWN_KEYS = ("rpcap", "settings", "environments", "regions", "sub-region", "hosts", "id", "address",
               "description", "interfaces", "port", "auth", "auth_mode", "username", "password",
               "default_port", "default_capture_root", "sip_addresses", "media_addresses")

MAX_YAML_DEPTH = 32  # hosts.yaml needs 9 levels; deeper input is an accident or an attack (RecursionError)


def _strict_port(value: Any, info: ValidationInfo) -> Any:
    """YAML reads `port: true` as a bool and `port: 2002.5` as a float; int() would take both silently."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{info.field_name} {json.dumps(value)} is not a port number (write a whole number 1-65535, "
                         f"e.g. {DEFAULT_RPCAP_PORT}, without quotes)")
    return value


Port = Annotated[int, BeforeValidator(_strict_port), Field(ge=1, le=65535)]


def _none_to_empty(factory: type) -> Any:
    """A YAML key with nothing after it (`regions:`) is None; read it as an empty mapping/list."""
    return BeforeValidator(lambda value: factory() if value is None else value)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class RpcapAuth(BaseModel):
    """RPCAP authentication: null (rpcapd -n) or username/password; the password never shows in repr."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    auth_mode: Annotated[Literal["null", "password"], BeforeValidator(lambda v: "null" if v is None else v)] = "null"
    username: str | None = None
    password: str | None = Field(default=None, repr=False)

    @property
    def mode(self) -> Literal["null", "password"]:
        """YAML `null` and the string "null" both mean no authentication (normalised to "null")."""
        return self.auth_mode

    @model_validator(mode="after")
    def _password_needs_credentials(self) -> RpcapAuth:
        if self.mode == "password" and not (self.username and self.password):
            raise ValueError("auth_mode password needs both username and password")
        return self


class RpcapConfig(RpcapAuth):
    """The top-level `rpcap:` block: the default port and the default authentication of every host."""

    default_port: Port = DEFAULT_RPCAP_PORT

    def auth(self) -> RpcapAuth:
        """The default authentication without the port."""
        return RpcapAuth(auth_mode=self.auth_mode, username=self.username, password=self.password)


class HostsSettings(BaseModel):
    """The `settings:` block."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_capture_root: str | None = None


class HostConfig(BaseModel):
    """One media host as written in hosts.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    address: str
    description: str = ""
    interfaces: Annotated[tuple[str, ...], BeforeValidator(_as_list)] = Field(min_length=1)
    port: Port | None = None
    auth: RpcapAuth | None = None
    # Call assembly (issue 8): the box's signalling and media addresses tie the two sides of a B2BUA call.
    sip_addresses: Annotated[tuple[str, ...], BeforeValidator(_as_list)] = ()
    media_addresses: Annotated[tuple[str, ...], BeforeValidator(_as_list)] = ()

    @field_validator("sip_addresses", "media_addresses")
    @classmethod
    def _check_ip_list(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        out = []
        for index, text in enumerate(value):
            try:
                out.append(str(ipaddress.ip_address(str(text).strip())))
            except ValueError:
                raise ValueError(f"{info.field_name}[{index}] {text!r} is not an IP address "
                                 "(list the addresses the SBC signals/relays media from, e.g. 192.0.2.10)") from None
        return tuple(out)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _HOST_ID_RE.match(value):
            raise ValueError(f"id {value!r} may use only letters, digits, '.', '_' and '-' (it names capture files)")
        return value

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        value = value.strip()
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            pass
        if not _HOSTNAME_RE.match(value):
            raise ValueError(f"address {value!r} is neither an IP address nor a host name")
        return value

    @field_validator("interfaces")
    @classmethod
    def _check_interfaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, name in enumerate(value):
            if not name.strip():
                raise ValueError(f"interfaces[{index}] must be a non-empty interface name")
        return tuple(name.strip() for name in value)


class SubRegionConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    hosts: Annotated[tuple[HostConfig, ...], _none_to_empty(tuple)] = ()


class RegionConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    sub_regions: Annotated[dict[str, SubRegionConfig], _none_to_empty(dict)] = Field(
        default_factory=dict, alias="sub-region")


class EnvironmentConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    regions: Annotated[dict[str, RegionConfig], _none_to_empty(dict)] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HostEntry:
    """A host with its place in the tree and its effective port and authentication."""

    env: str
    region: str
    sub_region: str
    id: str
    address: str
    port: int
    interfaces: tuple[str, ...]
    description: str
    auth: RpcapAuth
    sip_addresses: tuple[str, ...] = ()     # call assembly: addresses this box signals from
    media_addresses: tuple[str, ...] = ()   # call assembly: addresses this box relays media from

    @property
    def label(self) -> str:
        """"<region>-<host>", the stem of the seed's raw chunk names (`<region>-<host>-0001.pcap`)."""
        return f"{self.region}-{self.id}"


def _unknown(kind: str, name: str, where: str, known: Iterable[str]) -> ConfigError:
    known = list(known)
    return ConfigError(f"unknown {kind} {name!r} in {where}; known: {', '.join(known) if known else '(none)'}")


class HostsConfig(BaseModel):
    """The whole hosts.yaml; query it with hosts()/find_host() rather than walking the tree."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rpcap: Annotated[RpcapConfig, _none_to_empty(dict)] = Field(default_factory=RpcapConfig)
    settings: Annotated[HostsSettings, _none_to_empty(dict)] = Field(default_factory=HostsSettings)
    environments: Annotated[dict[str, EnvironmentConfig], _none_to_empty(dict)]

    @model_validator(mode="after")
    def _unique_host_ids(self) -> HostsConfig:
        for env_name, env in self.environments.items():
            seen: dict[str, str] = {}
            for region, sub, index, host in _walk(env):
                place = f"regions.{region}.sub-region.{sub}.hosts[{index}]"
                if host.id in seen:
                    raise ValueError(
                        f"environments.{env_name}: duplicate host id {host.id!r} at {seen[host.id]} and {place}")
                seen[host.id] = place
        return self

    def environments_names(self) -> list[str]:
        """Environment names in file order (the UI/flow dropdown)."""
        return list(self.environments)

    def _environment(self, env: str) -> EnvironmentConfig:
        if env not in self.environments:
            raise _unknown("environment", env, "hosts.yaml", self.environments)
        return self.environments[env]

    def regions_names(self, env: str) -> list[str]:
        """Region names of one environment in file order."""
        return list(self._environment(env).regions)

    def sub_regions_names(self, env: str, regions: Sequence[str] | None = None) -> list[str]:
        """Sub-region names of the chosen regions (all when None), without repeats, in file order."""
        names: dict[str, None] = {}
        for region in self._chosen_regions(env, regions):
            names.update(dict.fromkeys(self.environments[env].regions[region].sub_regions))
        return list(names)

    def _chosen_regions(self, env: str, regions: Sequence[str] | None) -> list[str]:
        known = self._environment(env).regions
        if regions is None:
            return list(known)
        for region in regions:
            if region not in known:
                raise _unknown("region", region, f"environment {env}", known)
        return [region for region in known if region in regions]

    def hosts(
        self, env: str, regions: Sequence[str] | None = None, sub_regions: Sequence[str] | None = None
    ) -> list[HostEntry]:
        """Hosts of an environment, narrowed to regions/sub-regions (None = all), in file order."""
        chosen = self._chosen_regions(env, regions)
        if sub_regions is not None:
            available = self.sub_regions_names(env, chosen)
            for sub in sub_regions:
                if sub not in available:
                    raise _unknown("sub-region", sub, f"environment {env} regions {', '.join(chosen)}", available)
        default_auth = self.rpcap.auth()
        entries = []
        for region, sub, _, host in _walk(self.environments[env]):
            if region in chosen and (sub_regions is None or sub in sub_regions):
                entries.append(HostEntry(
                    env=env, region=region, sub_region=sub, id=host.id, address=host.address,
                    port=host.port or self.rpcap.default_port, interfaces=host.interfaces,
                    description=host.description, auth=host.auth or default_auth,
                    sip_addresses=host.sip_addresses, media_addresses=host.media_addresses,
                ))
        return entries

    def find_host(self, env: str, host_id: str) -> HostEntry:
        """One host by id; the error lists the environment's host ids."""
        entries = self.hosts(env)
        for entry in entries:
            if entry.id == host_id:
                return entry
        raise _unknown("host", host_id, f"environment {env}", (entry.id for entry in entries))

    def capture_root(self, settings: Settings | None = None) -> Path:
        """RTPHELPER_CAPTURE_ROOT, else settings.default_capture_root, else ~/Downloads (the seed's order)."""
        return capture_root(settings, self)


def _walk(env: EnvironmentConfig) -> Iterable[tuple[str, str, int, HostConfig]]:
    for region_name, region in env.regions.items():
        for sub_name, sub in region.sub_regions.items():
            for index, host in enumerate(sub.hosts):
                yield region_name, sub_name, index, host


def capture_root(settings: Settings | None, hosts: HostsConfig | None = None) -> Path:
    """Where capture sessions go: the env override wins over hosts.yaml, then the seed's ~/Downloads."""
    if settings is not None and settings.capture_root is not None:
        return settings.capture_root.expanduser()
    if hosts is not None and hosts.settings.default_capture_root:
        return Path(hosts.settings.default_capture_root).expanduser()
    return DEFAULT_CAPTURE_ROOT.expanduser()


class _DuplicateKey(Exception):
    pass


class _TooDeep(Exception):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses repeated keys and nesting past MAX_YAML_DEPTH (PyYAML recurses per level)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """Count nesting before the recursive composer goes deeper, so 3,000 `[` is an error, not a crash."""
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _TooDeep(f"line {mark.line + 1}, column {mark.column + 1}: nested more than "
                               f"{MAX_YAML_DEPTH} levels deep; hosts.yaml needs far fewer (check brackets "
                               "and indentation)")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(f"line {line}: key {key!r} repeats line {seen[key]}")
                seen[key] = line
            except TypeError:  # unhashable key: let SafeLoader report it
                pass
        return super().construct_mapping(node, deep=deep)


def _place(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _host_at(data: Any, loc: Sequence[int | str]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _describe(error: Any, data: Any) -> str:
    loc: tuple[int | str, ...] = tuple(error["loc"])
    kind = error["type"]
    reason = str(error["ctx"]["error"]) if kind == "value_error" else error["msg"]
    # Split the location at the host, if any: "<host place> (<id>): <what is wrong with it>".
    split = next((i + 2 for i in range(len(loc) - 1) if loc[i] == "hosts" and isinstance(loc[i + 1], int)), None)
    head, tail = (loc[:split], loc[split:]) if split else (loc, ())
    if split is None and loc and (kind in ("missing", "extra_forbidden")
                                  or (kind == "value_error" and reason.startswith(f"{loc[-1]} "))):
        head, tail = loc[:-1], loc[-1:]
    field = str(tail[0]) if tail else ""
    if kind == "value_error":
        pass  # our validators already name the field they reject
    elif field == "interfaces" and kind in ("too_short", "missing"):
        reason = "needs at least one interface"
    elif kind == "missing":
        reason = f"missing {_place(tail)!r}"
    elif kind == "extra_forbidden":
        hint = difflib.get_close_matches(field, _KNOWN_KEYS, n=1)
        reason = f"unknown key {field!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
    elif tail:
        reason = f"{_place(tail)}: {reason}"
    if not head:
        return reason if kind == "value_error" else f"top level: {reason}"
    place = _place(head)
    if split:
        host = _host_at(data, head)
        host_id = host.get("id") if isinstance(host, dict) else None
        place += f" ({host_id})" if host_id else ""
    return f"{place}: {reason}"


def load_hosts(path: str | Path) -> HostsConfig:
    """Parse and validate hosts.yaml; every problem becomes a ConfigError naming file and place."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: not found; {COPY_HINT}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except (_DuplicateKey, _TooDeep) as exc:
        raise ConfigError(f"{path} {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: YAML syntax error: {exc.problem or exc.context}") from None
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read hosts file ({exc})") from None
    if data is None:
        raise ConfigError(f"{path}: empty; {COPY_HINT}")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping with rpcap, settings and environments, got {type(data).__name__}")
    try:
        return HostsConfig.model_validate(data)
    except ValidationError as exc:
        details = [_describe(error, data) for error in exc.errors()]
        raise ConfigError(f"{path}: " + "; ".join(details)) from None

