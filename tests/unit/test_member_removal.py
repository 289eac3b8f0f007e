"""Which member ``kayit member remove`` means, by gRPC address or node id, and what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kayit.cluster.removal import RemovalRefused, RemovedMember, resolve_member

NODES = {"aaaaaaaaaaaa": "127.0.0.1:5555", "bbbbbbbbbbbb": "127.0.0.1:5556"}


def test_a_member_is_found_by_address_or_by_node_id() -> None:
    expected = RemovedMember("bbbbbbbbbbbb", "127.0.0.1:5556")
    assert resolve_member(NODES, frozenset(), "127.0.0.1:5556") == expected
    assert resolve_member(NODES, frozenset(), "bbbbbbbbbbbb") == expected


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("127.0.0.1:5557", "no member at 127.0.0.1:5557"),
        ("localhost:5556", "no member at localhost:5556"),  # addresses as status lists them
        ("cccccccccccc", "no member with node id cccccccccccc"),
        ("dddddddddddd", "node dddddddddddd was removed already"),
    ],
)
def test_what_names_no_member_is_refused(member: str, reason: str) -> None:
    with pytest.raises(RemovalRefused) as refused:
        resolve_member(NODES, frozenset({"dddddddddddd"}), member)
    assert str(refused.value).startswith(reason)


@pytest.mark.parametrize("member", ["aaaaaaaaaaaa", "127.0.0.1:5555"])
def test_the_last_member_is_not_removed(member: str) -> None:
    with pytest.raises(RemovalRefused, match="the only member left"):
        resolve_member({"aaaaaaaaaaaa": "127.0.0.1:5555"}, frozenset(), member)


_ids = st.text("0123456789abcdef", min_size=12, max_size=12)
_ports = st.integers(1, 65535)


@given(
    st.dictionaries(_ids, _ports, min_size=2, max_size=8, dict_class=dict).filter(
        lambda ports: len(set(ports.values())) == len(ports)  # two members never share an address
    )
)
def test_every_member_is_found_by_either_name(ports: dict[str, int]) -> None:
    nodes = {node_id: f"10.0.0.1:{port}" for node_id, port in ports.items()}
    for node_id, address in nodes.items():
        expected = RemovedMember(node_id, address)
        assert resolve_member(nodes, frozenset(), node_id) == expected
        assert resolve_member(nodes, frozenset(), address) == expected
