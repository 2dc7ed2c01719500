"""Interconnects and clusters (issue 11, part 3): the table's figures against their closed forms, lookups and
aliases, errors naming close matches, Cluster defaults, links and validation, user-file overrides and additions,
the new GPUs, NCCL buffer memory, and `gpus --interconnects`."""
from __future__ import annotations

import json

import pytest

from torchbudget.cli import run_cli
from torchbudget.engine.overheads import NCCL_BUFFERS_PER_CONNECTION_BYTES, Overheads
from torchbudget.errors import UserError
from torchbudget.hardware import catalog, interconnect
from torchbudget.hardware.cluster import Cluster
from torchbudget.hardware.errors import ClusterError, InterconnectFileError, UnknownInterconnectError
from torchbudget.hardware.interconnect import (KINDS, Interconnect, default_inter_node, default_intra_node,
                                               find_interconnect, interconnects)
from torchbudget.hardware.spec_file import SpecFileError
from tests.hardware_fakes import isolated_config  # noqa: F401

MIB = 2**20


@pytest.fixture(autouse=True)
def fresh_table(isolated_config):
    interconnect.reload()
    yield
    interconnect.reload()


def gpu(name):
    return catalog.resolve_gpu(name)


def write_user_file(config, text):
    config.mkdir(parents=True, exist_ok=True)
    (config / "gpus.toml").write_text(text, encoding="utf-8")
    interconnect.reload()
    catalog.reload()


# ------------------------------------------------------------------------------------------------ the table
def test_every_entry_is_sourced_and_in_range():
    links = interconnects()
    assert len(links) >= 18
    for link in links:
        assert link.kind in KINDS, link.name
        assert 0 < link.efficiency <= 1 and link.latency_us > 0 and link.bandwidth_gb_s > 0, link.name
        assert link.source and link.efficiency_source and link.origin == "database", link.name
        assert link.bus_bandwidth_gb_s == pytest.approx(link.bandwidth_gb_s * link.efficiency)
    assert {link.kind for link in links} == set(KINDS)


def test_nvlink_figures_are_links_times_per_link_rate_one_direction():
    assert find_interconnect("NVLink 2").bandwidth_gb_s == 6 * 25       # V100: 6 links
    assert find_interconnect("NVLink 3").bandwidth_gb_s == 12 * 25      # A100: 12 links
    assert find_interconnect("NVLink 4").bandwidth_gb_s == 18 * 25      # H100: 18 links x 25 GB/s = 450
    assert find_interconnect("NVLink 5").bandwidth_gb_s == 18 * 50      # B200: 18 links x 50 GB/s = 900
    # vendors print the bidirectional sum: H100 "900 GB/s", B200 "1.8 TB/s"
    assert 2 * find_interconnect("NVLink 4").bandwidth_gb_s == 900
    assert 2 * find_interconnect("NVLink 5 NVL72").bandwidth_gb_s == 1800
    assert find_interconnect("NVLink 4").domain_gpus == 8 and find_interconnect("NVL72").domain_gpus == 72
    # the measured share: NCCL reaches ~350 GB/s on H100 NVLink
    assert find_interconnect("NVLink 4").bus_bandwidth_gb_s == pytest.approx(350, rel=0.01)


@pytest.mark.parametrize("name, gt_s", [("PCIe 3 x16", 8), ("PCIe 4 x16", 16), ("PCIe 5 x16", 32)])
def test_pcie_is_transfer_rate_times_lanes_times_128b130b(name, gt_s):
    assert find_interconnect(name).bandwidth_gb_s == pytest.approx(gt_s * 16 * 128 / 130 / 8, abs=0.01)


def test_pcie6_flit_and_network_rates():
    assert find_interconnect("pcie6").bandwidth_gb_s == pytest.approx(64 * 16 / 8 * 242 / 256, abs=0.01)
    for name, gbit in (("ib-hdr", 200), ("ib-ndr", 400), ("ib-xdr", 800), ("roce-100", 100), ("roce-200", 200),
                       ("roce-400", 400)):
        assert find_interconnect(name).bandwidth_gb_s == gbit / 8, name
    assert find_interconnect("Infinity Fabric (MI300X)").bandwidth_gb_s == 7 * 128 / 2


# ------------------------------------------------------------------------------------------------ lookups
@pytest.mark.parametrize("text, name", [
    ("nvlink4", "NVLink 4"), ("NVLink 4", "NVLink 4"), ("nvlink-4", "NVLink 4"), ("NVLINK 5", "NVLink 5"),
    ("pcie5", "PCIe 5 x16"), ("PCIe Gen4", "PCIe 4 x16"), ("pcie 5 x16", "PCIe 5 x16"),
    ("ib-ndr", "InfiniBand NDR"), ("IB NDR", "InfiniBand NDR"), ("ndr400", "InfiniBand NDR"),
    ("roce-400", "RoCE 400GbE"), ("RoCE 200", "RoCE 200GbE"), ("nvl72", "NVLink 5 NVL72"),
    ("xgmi", "Infinity Fabric (MI300X)"), ("  hgx h100 ", "NVLink 4"),
])
def test_names_and_aliases_ignore_case_spaces_and_punctuation(text, name):
    assert find_interconnect(text).name == name


def test_an_interconnect_is_returned_as_is():
    link = find_interconnect("NVLink 3")
    assert find_interconnect(link) is link


@pytest.mark.parametrize("text, close", [("nvlnk 4", "NVLink 4"), ("pcie 7", "PCIe"), ("infiniband ndx", "InfiniBand")])
def test_unknown_names_one_line_with_close_matches(text, close):
    with pytest.raises(UnknownInterconnectError) as info:
        find_interconnect(text)
    message = str(info.value)
    assert "\n" not in message and f"unknown interconnect {text!r}" in message and close in message
    assert isinstance(info.value, UserError) and info.value.field == "interconnect"


def test_empty_name():
    with pytest.raises(UnknownInterconnectError, match="no interconnect name"):
        find_interconnect("  ")


# ------------------------------------------------------------------------------------------------ defaults
@pytest.mark.parametrize("gpu_name, link", [
    ("H100 SXM", "NVLink 4"), ("H200 SXM", "NVLink 4"), ("A100 SXM 80GB", "NVLink 3"), ("V100 SXM2 32GB", "NVLink 2"),
    ("B200", "NVLink 5"), ("GB200", "NVLink 5 NVL72"), ("H200 NVL", "NVLink 4 bridge"),
    ("H100 PCIe", "PCIe 5 x16"), ("A100 PCIe 80GB", "PCIe 4 x16"), ("L40S", "PCIe 4 x16"), ("T4", "PCIe 3 x16"),
    ("RTX 4090", "PCIe 4 x16"), ("RTX 5090", "PCIe 5 x16"), ("RTX PRO 6000 Blackwell", "PCIe 5 x16"),
    ("MI300X", "Infinity Fabric (MI300X)"), ("MI325X", "Infinity Fabric (MI300X)"),
    ("MI355X", "Infinity Fabric (MI355X)"), ("MI250X", "PCIe 4 x16"),
])
def test_default_intra_node_link(gpu_name, link):
    assert default_intra_node(gpu(gpu_name)).name == link


def test_every_named_gpu_link_exists_and_a_gpu_without_one_gets_pcie_by_generation():
    import dataclasses

    for spec in catalog.database():
        if spec.interconnect:
            assert find_interconnect(spec.interconnect).kind in interconnect.INTRA_NODE_KINDS, spec.name
    bare = dataclasses.replace(gpu("H100 SXM"), interconnect="")
    assert default_intra_node(bare).name == "PCIe 5 x16"
    assert default_intra_node(dataclasses.replace(bare, compute_capability="8.6")).name == "PCIe 4 x16"
    assert default_intra_node(dataclasses.replace(bare, compute_capability=None)).name == "PCIe 4 x16"
    assert default_inter_node().name == "InfiniBand NDR" and default_inter_node().bandwidth_gb_s == 50


# ------------------------------------------------------------------------------------------------ clusters
def test_cluster_defaults_nodes_and_links():
    cluster = Cluster.build(gpu("H100 SXM"), 16)
    assert (cluster.gpus_per_node, cluster.nodes) == (8, 2)
    assert (cluster.intra.name, cluster.inter.name) == ("NVLink 4", "InfiniBand NDR")
    assert cluster.link((0, 1, 7)) is cluster.intra
    assert cluster.link((8, 15)) is cluster.intra          # all on node 1
    assert cluster.link((7, 8)) is cluster.inter           # straddles nodes 0 and 1
    assert cluster.link(tuple(range(16))) is cluster.inter
    assert cluster.link((3,)) is cluster.intra
    assert "2 nodes of 8" in cluster.describe()
    single = Cluster.build(gpu("A100 SXM 80GB"), 1)
    assert (single.gpus_per_node, single.nodes, single.intra.name) == (1, 1, "NVLink 3")
    small = Cluster.build(gpu("H100 SXM"), 4)
    assert (small.gpus_per_node, small.nodes) == (4, 1) and small.link((0, 3)) is small.intra


def test_cluster_with_names_or_objects_and_explicit_node_size():
    cluster = Cluster.build(gpu("A100 PCIe 80GB"), 16, gpus_per_node=4, intra="pcie4", inter="roce-200")
    assert (cluster.nodes, cluster.intra.name, cluster.inter.name) == (4, "PCIe 4 x16", "RoCE 200GbE")
    assert cluster.link((0, 4)) is cluster.inter and cluster.link((4, 7)) is cluster.intra
    ndr = find_interconnect("InfiniBand XDR")
    assert Cluster.build(gpu("B200"), 32, inter=ndr).inter is ndr


def test_nvl72_domain_sets_the_default_node_size():
    cluster = Cluster.build(gpu("GB200"), 144)
    assert (cluster.gpus_per_node, cluster.nodes, cluster.intra.name) == (72, 2, "NVLink 5 NVL72")
    assert Cluster.build(gpu("GB200"), 64).gpus_per_node == 64
    assert Cluster.build(gpu("H200 NVL"), 8).gpus_per_node == 4      # 4-way bridge groups


@pytest.mark.parametrize("kwargs, words", [
    ({"world_size": 0}, "world size must be at least 1"),
    ({"world_size": -8}, "world size must be at least 1"),
    ({"world_size": 2.5}, "world size must be a whole number"),
    ({"world_size": True}, "world size must be a whole number"),
    ({"world_size": "many"}, "world size must be a whole number"),
    ({"world_size": 12}, "world size 12 is not a whole number of nodes of 8 GPUs"),
    ({"world_size": 16, "gpus_per_node": 0}, "GPUs per node must be at least 1"),
    ({"world_size": 16, "gpus_per_node": 16}, "16 GPUs per node exceed NVLink 4's domain of 8 GPUs"),
    ({"world_size": 8, "gpus_per_node": 8, "intra": "NVLink 4 bridge"}, "8 GPUs per node exceed NVLink 4 bridge's domain of 4"),
    ({"world_size": 32, "inter": "NVLink 4"}, "32 GPUs exceed NVLink 4's domain of 8 GPUs between nodes"),
    ({"world_size": 10**9}, "implausible"),
])
def test_cluster_validation_one_line(kwargs, words):
    with pytest.raises(ClusterError) as info:
        Cluster.build(gpu("H100 SXM"), **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, UserError) and info.value.field == "world_size"


def test_cluster_unknown_interconnect_is_a_user_error():
    with pytest.raises(UnknownInterconnectError, match="Closest: InfiniBand"):
        Cluster.build(gpu("H100 SXM"), 16, inter="infiniband ndx")


def test_link_rejects_ranks_outside_the_world():
    cluster = Cluster.build(gpu("H100 SXM"), 8)
    with pytest.raises(ValueError):
        cluster.link(())
    with pytest.raises(ValueError):
        cluster.link((0, 8))


# ------------------------------------------------------------------------------------------------ user file
def test_user_file_overrides_efficiency_and_latency_of_a_builtin(isolated_config):
    write_user_file(isolated_config, '[[interconnect]]\nname = "nvlink4"\nefficiency = 0.9\nlatency_us = 6.5\n')
    link = find_interconnect("NVLink 4")
    assert (link.efficiency, link.latency_us, link.bandwidth_gb_s, link.origin) == (0.9, 6.5, 450.0, "user")
    assert "user file" in link.efficiency_source and link.source.startswith("NVIDIA H100")
    assert find_interconnect("NVLink 3").origin == "database"
    assert Cluster.build(gpu("H100 SXM"), 8).intra.efficiency == 0.9


def test_user_file_adds_an_interconnect_with_defaults_of_its_kind(isolated_config):
    write_user_file(isolated_config, '[[interconnect]]\nname = "Lab Ethernet"\nkind = "roce"\nbandwidth_gb_s = 3.125\n'
                                     'aliases = ["lab25"]\n')
    link = find_interconnect("lab25")
    assert (link.name, link.bandwidth_gb_s, link.efficiency, link.latency_us) == ("Lab Ethernet", 3.125, 0.85, 25.0)
    assert link.origin == "user" and "RoCE 100GbE" in link.efficiency_source
    assert Cluster.build(gpu("RTX 4090"), 4, gpus_per_node=2, inter="lab ethernet").inter is link


def test_user_file_keeps_gpus_and_interconnects_together(isolated_config):
    from torchbudget.hardware.user_file import save_user_gpu
    import dataclasses

    write_user_file(isolated_config, '[[interconnect]]\nname = "Lab Ethernet"\nkind = "roce"\nbandwidth_gb_s = 3.125\n')
    save_user_gpu(dataclasses.replace(gpu("RTX 4090"), name="Lab 4090", nvml_names=(), aliases=(),
                                      interconnect="Lab Ethernet"))
    catalog.reload()
    interconnect.reload()
    text = (isolated_config / "gpus.toml").read_text()
    assert "[[interconnect]]" in text and "[[gpu]]" in text
    assert default_intra_node(gpu("Lab 4090")).name == "Lab Ethernet"


@pytest.mark.parametrize("table, field, words", [
    ('name = "NVLink 4"\nefficiency = 1.5', "efficiency", "not a fraction in (0, 1]"),
    ('name = "NVLink 4"\nefficiency = "high"', "efficiency", "must be a number"),
    ('name = "NVLink 4"\nlatency_us = -1', "latency_us", "not in [0"),
    ('name = "NVLink 4"\nbandwidth_gb_s = 4e11', "bandwidth_gb_s", "unit is GB/s"),
    ('name = "NVLink 4"\ndomain_gpus = 0', "domain_gpus", "positive integer"),
    ('name = "NVLink 4"\nspeed = 3', "speed", "unknown key"),
    ('name = "Mine"\nkind = "warp"\nbandwidth_gb_s = 10', "kind", "must be one of"),
    ('name = "Mine"\nkind = "roce"', "bandwidth_gb_s", "missing"),
    ('name = "Mine"\nkind = "roce"\nbandwidth_gb_s = 10\naliases = ["ib-ndr"]', "aliases", "already used"),
])
def test_bad_user_interconnects_name_file_entry_and_field(isolated_config, table, field, words):
    write_user_file(isolated_config, f"[[interconnect]]\n{table}\n")
    with pytest.raises(InterconnectFileError) as info:
        interconnects()
    message = str(info.value)
    assert str(isolated_config / "gpus.toml") in message and f"field {field!r}" in message and words in message
    assert "\n" not in message and isinstance(info.value, SpecFileError)
    catalog.database()  # a bad interconnect table does not stop the GPUs loading


def test_broken_user_toml_is_one_interconnect_error(isolated_config):
    write_user_file(isolated_config, "[[interconnect]\nname = 1\n")
    with pytest.raises(InterconnectFileError, match="not valid TOML"):
        find_interconnect("NVLink 4")


# ------------------------------------------------------------------------------------------------ new GPUs
@pytest.mark.parametrize("name, memory_gib, bandwidth, bf16, fp8", [
    ("GB200", 186, 8000, 2500.0, 5000.0),
    ("H200 NVL", 141, 4800, 835.5, 1670.5),
    ("RTX PRO 6000 Blackwell", 96, 1792, 500.0, 1000.0),
    ("RTX PRO 6000 Blackwell Server", 96, 1597, 500.0, 1000.0),
    ("MI325X", 256, 6000, 1307.4, 2614.9),
    ("MI355X", 288, 8000, 2516.6, 5033.2),
])
def test_new_gpus_present_dense_and_sourced(name, memory_gib, bandwidth, bf16, fp8):
    spec = gpu(name)
    assert (spec.name, spec.memory_bytes, spec.bandwidth_gbs) == (name, memory_gib * 2**30, bandwidth)
    assert (spec.peak_tflops["bf16"], spec.peak_tflops["fp8"]) == (bf16, fp8)
    assert spec.source and "datasheet" in spec.source.replace("data sheet", "datasheet")
    assert spec.interconnect and find_interconnect(spec.interconnect)


def test_new_gpu_names_resolve():
    assert gpu("NVIDIA RTX PRO 6000 Blackwell Server Edition").name == "RTX PRO 6000 Blackwell Server"
    assert gpu("NVIDIA H200 NVL").name == "H200 NVL"
    assert gpu("H200").name == "H200 SXM"            # the plain name still means the SXM board
    assert gpu("Instinct MI355X").peak_tflops["tf32"] is None   # CDNA 4 has no TF32 matrix rate


# ------------------------------------------------------------------------------------------------ NCCL memory
def test_nccl_buffers_per_communicator_closed_form():
    assert NCCL_BUFFERS_PER_CONNECTION_BYTES == 4 * MIB + 8 * 512 * 8 * 16 + 120 * 640 * 8 * 8
    overheads = Overheads()
    assert overheads.nccl_bytes_per_communicator == 32 * 2 * NCCL_BUFFERS_PER_CONNECTION_BYTES == 588 * MIB
    # NVIDIA/nccl#964: each extra process group took 544 MB (2 ranks) to 688 MB (4 ranks) on A100 NVLink
    assert 544e6 <= overheads.nccl_bytes_per_communicator <= 688e6
    assert overheads.communication_bytes(0) == 0 and overheads.communication_bytes(3) == 3 * 588 * MIB
    assert Overheads(nccl_bytes_per_communicator=64 * MIB).communication_bytes(2) == 128 * MIB
    assert Overheads.none().communication_bytes(4) == 0
    with pytest.raises(ValueError):
        Overheads(nccl_bytes_per_communicator=-1)
    with pytest.raises(ValueError):
        overheads.communication_bytes(-1)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_lists_the_table(capsys):
    assert run_cli(["gpus", "--interconnects"]) == 0
    out = capsys.readouterr().out
    assert "default between nodes: InfiniBand NDR" in out
    for link in interconnects():
        assert link.name in out
    row = next(line for line in out.splitlines() if line.startswith("NVLink 4 "))
    assert row.split()[2:8] == ["nvlink", "450", "0.78", "351.0", "10", "8"]


def test_cli_json(capsys):
    assert run_cli(["gpus", "--interconnects", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["default_inter_node"] == "InfiniBand NDR"
    assert [d["name"] for d in document["interconnects"]] == [link.name for link in interconnects()]
    pcie5 = next(d for d in document["interconnects"] if d["name"] == "PCIe 5 x16")
    assert pcie5["bandwidth_gb_s"] == 63.02 and pcie5["domain_gpus"] is None and pcie5["source"]
    assert pcie5["bus_bandwidth_gb_s"] == pytest.approx(63.02 * pcie5["efficiency"])


def test_cli_bad_user_interconnect_is_one_line_exit_2(isolated_config, capsys):
    write_user_file(isolated_config, '[[interconnect]]\nname = "NVLink 4"\nefficiency = 2\n')
    assert run_cli(["gpus", "--interconnects"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "efficiency" in err


def test_interconnect_dataclass_is_frozen():
    link = find_interconnect("NVLink 4")
    with pytest.raises(Exception):
        link.efficiency = 1.0  # type: ignore[misc]
    assert isinstance(link, Interconnect)
