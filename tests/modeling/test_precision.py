import torch

from components.modeling import precision


def test_a_cpu_takes_bf16_only_where_it_measures_clearly_faster(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "bf16_units", lambda device: True)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 0.5)  # a host where bf16 is slower
    assert precision.bf16_default(cpu) is False
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: precision.MIN_SPEEDUP - 0.01)
    assert precision.bf16_default(cpu) is False
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 2.3)  # a host with AMX
    assert precision.bf16_default(cpu) is True


def test_a_cpu_without_bf16_units_is_never_timed(monkeypatch):
    def timed():
        raise AssertionError("no bf16 units: nothing to measure")

    monkeypatch.setattr(precision, "bf16_units", lambda device: False)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", timed)
    assert precision.bf16_default(torch.device("cpu")) is False


def test_gpus_take_bf16_and_the_cpu_measurement_is_a_positive_ratio_made_once():
    assert precision.bf16_default(torch.device("cuda")) is True
    precision.cpu_bf16_speedup.cache_clear()
    first = precision.cpu_bf16_speedup(n=64, repeats=2)
    assert first > 0
    assert precision.cpu_bf16_speedup(n=64, repeats=2) == first  # cached, not measured again


def test_the_model_follows_the_measurement_unless_the_config_says(monkeypatch):
    from components.modeling import model as model_module
    from components.modeling.config import ModelConfig

    monkeypatch.setattr(model_module, "bf16_default", lambda device: False)

    class Stub:  # only what uses_bf16 reads
        device = torch.device("cpu")

    for configured, expected in ((None, False), (True, True), (False, False)):
        stub = Stub()
        stub.config = ModelConfig(bf16=configured)
        assert model_module.InstructUE.uses_bf16(stub) is expected
    monkeypatch.setattr(model_module, "bf16_default", lambda device: True)
    stub = Stub()
    stub.config = ModelConfig(bf16=None)
    assert model_module.InstructUE.uses_bf16(stub) is True
