"""A search space as a user writes one from scratch: its own dataclass config and its own spiking module.

Nothing in it comes from ``nas.snn``: the config is a frozen dataclass defined in the file and the
model an ``nn.Module`` of spikingjelly layers. At load time the file pickles its config and reads
its type hints, two things that need the file to be a registered module.
"""

SOURCE = '''
import pickle
import typing
from dataclasses import dataclass

from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

from nas import SearchSpace
from nas.train import TrainRecipe


@dataclass(frozen=True)
class SpikingMLPConfig:
    hidden: int
    time_steps: int
    tau: float = 2.0


class SpikingMLP(nn.Module):
    """Flatten, Linear, LIF, Linear; the logits are averaged over the time steps."""

    family = "user-spiking-mlp"

    def __init__(self, config: SpikingMLPConfig, data_info) -> None:
        super().__init__()
        self.config = config
        self.time_steps = config.time_steps
        inputs = data_info.in_chans * data_info.img_size * data_info.img_size
        self.encode = layer.Linear(inputs, config.hidden)
        self.lif = neuron.LIFNode(tau=config.tau, surrogate_function=surrogate.ATan(), detach_reset=True)
        self.classify = layer.Linear(config.hidden, data_info.num_classes)

    def forward(self, x):
        functional.reset_net(self)
        current = self.encode(x.flatten(1))
        logits = sum(self.classify(self.lif(current)) for _ in range(self.time_steps))
        return logits / self.time_steps


def sample(trial, data):
    return SpikingMLPConfig(hidden=trial.suggest_categorical("hidden", [16, 32]),
                            time_steps=trial.suggest_int("time_steps", 1, 2))


# Both need the file registered as a module: dataclasses already did at the decorator above.
assert pickle.loads(pickle.dumps(SpikingMLPConfig(16, 1))) == SpikingMLPConfig(16, 1)
assert typing.get_type_hints(SpikingMLPConfig)["hidden"] is int

space = SearchSpace(name="userspace", sample=sample, build=SpikingMLP, epochs={epochs}, trials={trials},
                    recipe=TrainRecipe(batch_size=64, train_subset=256, val_subset=128, energy_images=64))
'''


def user_space(*, epochs: int = 1, trials: int = 2) -> str:
    """Source text of the user-written space (4 distinct architectures)."""
    return SOURCE.replace("{epochs}", str(epochs)).replace("{trials}", str(trials))
