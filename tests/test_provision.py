"""Stream provisioning: the replica count comes from NATS_STREAM_REPLICAS when it is set, and
a stream provisioned again with the same settings is unchanged (idempotent start-up)."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS
from pulsestock.bus.provision import (
    StreamSpec,
    ensure_stream,
    provisioned,
    service_stream,
    stream_replicas,
)
from pulsestock.config import ConfigError


def test_the_replica_count_is_the_settings_or_the_specs() -> None:
    spec = service_stream("signal")
    assert provisioned(spec, {}).replicas == 1
    assert provisioned(spec, {"NATS_STREAM_REPLICAS": "3"}).replicas == 3
    assert provisioned(spec, {"NATS_STREAM_REPLICAS": "3"}).config().num_replicas == 3
    assert stream_replicas({"NATS_STREAM_REPLICAS": ""}) is None


@pytest.mark.parametrize("value", ["0", "6", "three", "-1", "2.5"])
def test_a_bad_replica_count_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigError, match="NATS_STREAM_REPLICAS"):
        stream_replicas({"NATS_STREAM_REPLICAS": value})


async def test_provisioning_twice_keeps_the_stream(
    nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATS_STREAM_REPLICAS", "1")
    spec = StreamSpec("PROVISION_TEST", ["provision_test.>"])
    js = nc.jetstream()
    try:
        await ensure_stream(js, spec)
        await js.publish("provision_test.a", b"x")
        await ensure_stream(js, spec)
        info = await js.stream_info(spec.name)
        assert info.config.num_replicas == 1
        assert info.state.messages == 1
    finally:
        await js.delete_stream(spec.name)
