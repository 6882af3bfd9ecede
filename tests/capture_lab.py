"""The loopback lab the capture tests share: a hosts.yaml with one host on a real rpcapd, and a UDP sender."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import yaml

SEND_GAP_S = 0.01


def lab_hosts_yaml(tmp_path: Path, rpcapd_port: int) -> Path:
    """hosts.yaml: environment LAB, region EU, sub-region lab-1, host media-1 = the loopback rpcapd; captures in tmp."""
    doc = {"rpcap": {"default_port": rpcapd_port, "auth_mode": None},
           "settings": {"default_capture_root": str(tmp_path / "captures")},
           "environments": {"LAB": {"regions": {"EU": {"sub-region": {"lab-1": {"hosts": [
               {"id": "media-1", "address": "127.0.0.1", "description": "loopback rpcapd", "interfaces": ["lo"]}]}}}}}}}
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def send_until(port: int, tag: bytes, stop: threading.Event) -> None:
    """Numbered datagrams to 127.0.0.1:port until `stop` is set (a capture of unknown start time catches some)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        i = 0
        while not stop.is_set():
            sock.sendto(tag + i.to_bytes(4, "big"), ("127.0.0.1", port))
            i += 1
            time.sleep(SEND_GAP_S)
