"""merge_captures and atomic_output: exact time order, re-framing of mixed link types, no half files."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rtpcore.errors import InputError, TruncatedCaptureError
from rtpcore.fsutil import atomic_output
from rtpcore.pcap.build import build_udp, frame
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW
from rtpcore.pcap.merge import merge_captures
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.writer import PcapngWriter, PcapWriter

T0 = 1_700_000_000_000_000_000
TUPLE_FIELDS = ["frame.time_epoch", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "ip.proto", "ipv6.nxt",
                "udp.srcport", "udp.dstport", "tcp.srcport", "tcp.dstport"]


def tshark_rows(tshark: str, path: Path, fields: list[str], *extra: str) -> list[tuple[str, ...]]:
    args = [tshark, "-r", str(path), *extra, "-T", "fields", "-E", "separator=|"]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return [tuple(line.split("|")) for line in out.stdout.splitlines()]


def capinfos(path: Path) -> str:
    return subprocess.run(["capinfos", "-t", "-E", "-c", "-M", str(path)], capture_output=True, text=True,
                          check=True).stdout


def tagged_capture(path: Path, tag: int, stamps_us: list[int], linktype: int = LINKTYPE_ETHERNET) -> None:
    """A capture whose frames carry (input tag, record number) in ip.id and the payload."""
    with PcapWriter(path, linktype) as w:
        for k, us in enumerate(stamps_us):
            l3 = build_udp("10.0.0.1", 41000 + tag, "10.0.0.2", 41010, bytes([tag, k]) * 10, ip_id=tag << 8 | k)
            w.write(T0 + us * 1000, frame(linktype, l3))


def test_three_inputs_interleaved_and_equal_timestamps(tmp_path: Path, tshark: str) -> None:
    stamps = {0: [1, 4, 4, 9], 1: [2, 4, 8], 2: [0, 4, 10, 10]}
    inputs = []
    for tag, us in stamps.items():
        inputs.append(tmp_path / f"in{tag}.pcap")
        tagged_capture(inputs[-1], tag, us)
    out = tmp_path / "merged.pcap"
    assert merge_captures(inputs, out) == 11

    # Python's sort is stable: equal times keep input order, then record order.
    expected = sorted(((us, tag, k) for tag, lst in stamps.items() for k, us in enumerate(lst)), key=lambda e: e[0])
    rows = tshark_rows(tshark, out, ["frame.time_epoch", "ip.id", "udp.srcport", "_ws.malformed"])
    assert [(int(r[1], 16) >> 8, int(r[1], 16) & 0xFF) for r in rows] == [(tag, k) for _, tag, k in expected]
    assert [r[0] for r in rows] == [f"{T0 // 10**9}.{us:06d}000" for us, _, _ in expected]
    assert [int(r[2]) for r in rows] == [41000 + tag for _, tag, _ in expected]
    assert all(r[3] == "" for r in rows)
    info = capinfos(out)
    assert "File type:           pcap" in info and "ether" in info and "Number of packets:   11" in info
    assert not list(tmp_path.glob(".*.part"))


def test_mixed_link_types_are_reframed_to_ethernet(tmp_path: Path, tshark: str, shared_pcaps: Path) -> None:
    sll_real = shared_pcaps / "heplify_sip_ipv4_tcp_retrans.pcap"     # Linux SLL, has TCP/UDP/VRRP
    eth_real = shared_pcaps / "heplify_sip_ipv6_udp.pcap"             # Ethernet, IPv6 UDP
    sll2 = tmp_path / "sll2.pcap"
    with open_capture(sll_real) as r:
        first_ts = next(iter(r)).ts_ns
    with PcapWriter(sll2, LINKTYPE_LINUX_SLL2) as w:
        for k in range(4):   # interleave with the real SLL file's first packets
            l3 = build_udp("2001:db8::1", 40000 + k, "2001:db8::2", 6, b"p")
            w.write(first_ts + k * 1_000_000, frame(LINKTYPE_LINUX_SLL2, l3))
    inputs = [sll_real, eth_real, sll2]
    out = tmp_path / "mixed.pcap"
    written = merge_captures(inputs, out)

    expected: list[tuple[str, ...]] = []
    for path in inputs:
        rows = tshark_rows(tshark, path, TUPLE_FIELDS, "-Y", "ip or ipv6")
        times = [float(r[0]) for r in rows]
        assert times == sorted(times)          # inputs are time-ordered, so a stable sort is the reference
        expected += rows
    expected.sort(key=lambda r: r[0])
    got = tshark_rows(tshark, out, TUPLE_FIELDS + ["eth.type"])
    assert written == len(got) == len(expected)
    assert [r[:-1] for r in got] == expected
    assert {r[-1] for r in got} <= {"0x0800", "0x86dd"}
    assert "ether" in capinfos(out)


def test_single_link_type_is_kept_byte_for_byte(tmp_path: Path, shared_pcaps: Path) -> None:
    src = shared_pcaps / "sngrep_ipv6frag.pcap"         # Linux SLL, IPv6 fragments
    out = tmp_path / "same.pcap"
    assert merge_captures([src], out) == 34
    with open_capture(src) as a, open_capture(out) as b:
        assert b.linktype == LINKTYPE_LINUX_SLL
        assert [(f.ts_ns, f.data, f.orig_len) for f in a] == [(f.ts_ns, f.data, f.orig_len) for f in b]


def test_sub_microsecond_inputs_give_a_nanosecond_pcap(tmp_path: Path, tshark: str) -> None:
    ns_in, us_in, ng_in = tmp_path / "ns.pcap", tmp_path / "us.pcap", tmp_path / "in.pcapng"
    l3 = build_udp("192.0.2.1", 41000, "192.0.2.2", 41002, b"abc")
    with PcapWriter(ns_in, LINKTYPE_RAW, nanosecond=True) as w:
        w.write(T0 + 1, l3)
        w.write(T0 + 999, l3)
    with PcapWriter(us_in, LINKTYPE_RAW) as w:
        w.write(T0 + 500_000, l3)
    out = tmp_path / "out.pcap"
    assert merge_captures([us_in, ns_in], out) == 3
    assert "nsecpcap" in capinfos(out) and "File encapsulation:  rawip" in capinfos(out)
    assert [r[0] for r in tshark_rows(tshark, out, ["frame.time_epoch"])] == [
        f"{T0 // 10**9}.{ns:09d}" for ns in (1, 999, 500_000)
    ]

    # A pcapng with two link types: SLL2 frames are re-framed to Ethernet, ns times survive.
    with PcapngWriter(ng_in) as w:
        w.add_interface(LINKTYPE_ETHERNET)
        w.add_interface(LINKTYPE_LINUX_SLL2)
        w.write(T0 + 7, frame(LINKTYPE_ETHERNET, l3))
        w.write(T0 + 8, frame(LINKTYPE_LINUX_SLL2, l3), interface=1)
    out2 = tmp_path / "out2.pcap"
    assert merge_captures([ng_in], out2) == 2
    rows = tshark_rows(tshark, out2, ["frame.time_epoch", "eth.type", "ip.src", "udp.length"])
    assert rows == [(f"{T0 // 10**9}.00000000{n}", "0x0800", "192.0.2.1", "11") for n in (7, 8)]


def test_existing_output_is_not_overwritten(tmp_path: Path) -> None:
    src = tmp_path / "in.pcap"
    tagged_capture(src, 1, [1, 2])
    out = tmp_path / "out.pcap"
    out.write_bytes(b"precious")
    with pytest.raises(InputError) as err:
        merge_captures([src], out)
    assert str(err.value) == f"{out} already exists; choose another --out or remove it"
    assert isinstance(err.value, FileExistsError)
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.pcap", "out.pcap"]
    with pytest.raises(InputError, match="at least one input"):
        merge_captures([], tmp_path / "none.pcap")


def test_failed_merge_leaves_no_file(tmp_path: Path, shared_pcaps: Path) -> None:
    good = tmp_path / "good.pcap"
    tagged_capture(good, 0, [0, 1])
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((shared_pcaps / "sipp_g711a.pcap").read_bytes()[:5000])   # ends inside a record
    out = tmp_path / "out.pcap"
    with pytest.raises(TruncatedCaptureError):
        merge_captures([good, cut], out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.pcap", "good.pcap"]


def test_atomic_output_success_error_and_overwrite(tmp_path: Path) -> None:
    final = tmp_path / "result.bin"
    with atomic_output(final) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".result.bin.") and temp.name.endswith(".part")
        temp.write_bytes(b"one")
        assert not final.exists()
    assert final.read_bytes() == b"one"

    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(tmp_path / "never.bin") as temp:
            temp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.bin"]

    with pytest.raises(InputError, match="already exists; choose another --out or remove it"):
        with atomic_output(final):
            pytest.fail("the block must not run")
    with atomic_output(final, overwrite=True) as temp:
        temp.write_bytes(b"two")
    assert final.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.bin"]

    with pytest.raises(FileNotFoundError, match="did not create its output file"):
        with atomic_output(tmp_path / "gone.bin") as temp:
            temp.unlink()
    assert not (tmp_path / "gone.bin").exists()


def test_temp_names_are_random_exclusive_and_never_follow_a_planted_symlink(tmp_path: Path, monkeypatch) -> None:
    """issue 9: a temp name planted in advance (a symlink to a victim file) is never opened or written through."""
    import stat

    from rtpcore import fsutil

    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    tokens = iter(["planted", "fresh"])
    monkeypatch.setattr(fsutil.secrets, "token_hex", lambda n: next(tokens))
    (tmp_path / ".out.pcap.planted.part").symlink_to(victim)
    with atomic_output(tmp_path / "out.pcap") as temp:
        assert temp.name == ".out.pcap.fresh.part"
        info = temp.lstat()
        assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        temp.write_bytes(b"new")
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "out.pcap").read_bytes() == b"new"


def _big_endian_copy(src: Path, dest: Path) -> None:
    """The same classic pcap with big-endian headers: the reader's general path (the records' bytes are kept)."""
    import struct

    data = src.read_bytes()
    out = [struct.pack(">IHHiIII", *struct.unpack_from("<IHHiIII", data, 0))]
    pos = 24
    while pos < len(data):
        sec, frac, incl, orig = struct.unpack_from("<IIII", data, pos)
        out.append(struct.pack(">IIII", sec, frac, incl, orig) + data[pos + 16 : pos + 16 + incl])
        pos += 16 + incl
    dest.write_bytes(b"".join(out))


def test_records_copied_verbatim_equal_the_general_merge(tmp_path: Path, tshark: str) -> None:
    """Our own little-endian pcaps are merged by copying records; the bytes equal a per-frame re-pack (big-endian
    copies of the same inputs take that path): µs records into a ns output, cut frames, an input out of order."""
    l3 = build_udp("192.0.2.1", 41000, "192.0.2.2", 41002, b"x" * 40)
    us_in, ns_in, late = tmp_path / "us.pcap", tmp_path / "ns.pcap", tmp_path / "late.pcap"
    with PcapWriter(us_in, LINKTYPE_RAW) as w:
        for us in (3, 5, 5, 40):
            w.write(T0 + us * 1000, l3)
        w.write(T0 + 41_000, l3[:30], orig_len=len(l3))      # cut by a snaplen: orig_len stays the wire length
    with PcapWriter(ns_in, LINKTYPE_RAW, nanosecond=True) as w:
        for ns in (1, 5_000, 39_999, 70_001):
            w.write(T0 + ns, l3)
    with PcapWriter(late, LINKTYPE_RAW) as w:                 # not in time order: the exact k-way merge
        for us in (9, 2, 60):
            w.write(T0 + us * 1000, l3)
    for inputs, count in (([us_in, late], 8), ([us_in, ns_in, late], 12), ([us_in, ns_in], 9)):
        fast, general = tmp_path / "fast.pcap", tmp_path / "general.pcap"
        swapped = []
        for p in inputs:
            swapped.append(tmp_path / f"be-{p.name}")
            _big_endian_copy(p, swapped[-1])
        assert merge_captures(inputs, fast) == count
        assert merge_captures(swapped, general) == count
        assert fast.read_bytes() == general.read_bytes()
        rows = tshark_rows(tshark, fast, ["frame.time_epoch", "frame.len", "frame.cap_len"])
        assert len(rows) == count
        assert (str(len(l3)), "30") in {(r[1], r[2]) for r in rows}
        fast.unlink()
        general.unlink()
