"""Registries: a user's group, model or system, once registered, works wherever a built-in does."""

import pytest
import torch

import hamnet
from hamnet.checkpoint import CheckpointError, model_from_checkpoint, save_checkpoint
from hamnet.groups import GROUPS, SO2, get_group, register_group
from hamnet.models import MODELS, HLieConv, ModelConfig, build_model, register_model
from hamnet.registry import Registry
from hamnet.systems import SYSTEMS, Springs, get_system_class, register_system


class Planar(SO2):
    """A user's group: SO(2) under another name (a subclass, so it is a different group class)."""

    name = "Planar"


class Doubled(HLieConv):
    """A user's model: HLieConv with its potential doubled."""

    def potential(self, q, params):
        return 2 * super().potential(q, params)


class Calm(Springs):
    name = "calm-springs"


@pytest.fixture
def registered():
    """Register the user's entries for one test and remove them afterwards."""
    register_group("Planar", Planar)
    register_model("doubled", Doubled)
    register_system(Calm)
    yield
    GROUPS.unregister("Planar")
    MODELS.unregister("doubled")
    SYSTEMS.pop("calm-springs")


def test_registry_basics():
    table = Registry("widget", hint="add one with register_widget")
    table.register("Gear", 1)
    table.register("Gear", 1)  # the same entry again is a no-op
    assert table.get("gear") == 1 and table.canonical("GEAR") == "Gear" and "gear" in table and len(table) == 1
    with pytest.raises(ValueError, match="a widget named 'Gear' is already registered"):
        table.register("gear", 2)
    table.register("gear", 2, replace=True)
    assert table.get("Gear") == 2
    with pytest.raises(ValueError, match="unknown widget 'cog'; known: gear; add one with register_widget"):
        table.get("cog")


def test_model_config_defaults_to_the_translations_of_its_dimension():
    assert ModelConfig(dim=3).group == "T3" and ModelConfig(dim=2).group == "T2"
    assert build_model(ModelConfig(dim=3, n_particles=4)).group == get_group("T3")


def test_unknown_names_fail_when_the_config_is_made():
    with pytest.raises(ValueError, match="unknown model 'transformer'; known: hlieconv, fc-node, fc-hnn, hogn"):
        ModelConfig(name="transformer")
    with pytest.raises(ValueError, match="unknown group 'SU3'"):
        ModelConfig(group="SU3")
    with pytest.raises(ValueError, match="acts in 3 dimensions"):
        ModelConfig(group="SO3", dim=2)
    ModelConfig(name="fc-node", group="anything")  # a model without a group ignores the field


def test_registered_group_and_model_work_in_configs_and_checkpoints(registered, tmp_path):
    config = ModelConfig(name="doubled", group="planar", n_particles=3, width=8, depth=1)
    model = build_model(config).double()
    assert isinstance(model, Doubled) and model.group == Planar()
    q = torch.randn(2, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    params = {"m": torch.ones(2, 3, dtype=torch.float64), "k": torch.ones(2, 3, dtype=torch.float64)}
    rotation = get_group("SO2").sample((2,), torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(model.potential(q @ rotation.transpose(-1, -2), params), model.potential(q, params),
                          rtol=1e-12, atol=1e-12)
    path = tmp_path / "user.pt"
    built = model.config  # the config with what it left to the data set (build_model: WITHOUT_DATA)
    save_checkpoint(path, {"model_config": built.__dict__ | {"feature_keys": list(built.feature_keys)},
                           "model": build_model(config).state_dict()})
    loaded, _ = model_from_checkpoint(path)
    assert isinstance(loaded, Doubled) and MODELS.get("doubled").label({"name": "doubled", "group": "Planar"}) \
        == "doubled Planar"


def test_a_checkpoint_naming_an_unregistered_group_says_how_to_load_it(registered, tmp_path):
    config = ModelConfig(group="Planar", n_particles=3, width=8, depth=1)
    path = tmp_path / "user.pt"
    save_checkpoint(path, {"model_config": dict(config.__dict__), "model": build_model(config).state_dict()})
    GROUPS.unregister("Planar")
    with pytest.raises(CheckpointError, match="unknown group 'Planar'.*--plugin"):
        model_from_checkpoint(path)
    register_group("Planar", Planar)


def test_registered_system_is_found_by_name(registered):
    assert get_system_class("calm-springs") is Calm
    with pytest.raises(ValueError, match="already registered"):
        register_system(Springs, "calm-springs")
    with pytest.raises(TypeError, match="concrete subclass"):
        register_system(int)


def test_public_api_is_small_and_complete():
    assert len(hamnet.__all__) <= 32  # 30, then import_trajectories and fit (issue 24)
    for name in hamnet.__all__:
        assert hasattr(hamnet, name), name
    for verb in ("generate", "train", "rollout", "evaluate", "register_group", "register_model",
                 "register_integrator"):
        assert callable(getattr(hamnet, verb))
