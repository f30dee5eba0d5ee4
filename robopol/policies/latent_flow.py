"""GoRL's actor: a Gaussian latent policy pi(z|s) whose latent a conditional generative decoder g(s, z)
turns into an action chunk, a = tanh(g(s, z)).

The latent has the chunk's shape (horizon x act_dim), so stage 0's identity decoder (g(s, z) = z)
makes the actor a plain Gaussian policy. A later decoder is a generative actor used as a deterministic
map from its starting noise x = z: a flow actor's K Euler steps (robopol.policies.flow), or, as GoRL's
variant, a diffusion actor's K DDIM steps with eta = 0 (robopol.policies.diffusion). Trained from
N(0, I) to a behaviour's actions, it reproduces that behaviour when z is drawn from N(0, I), which is
where a freshly initialised latent policy starts (mean ~0, std 1). A flow decoder learns the pre-tanh
actions and its output is squashed; a DDIM decoder clips its clean-chunk estimates to [-1, 1], so it
learns the executed actions themselves and its output goes to the env as it is.

`stage` (a buffer, so it travels in the checkpoint's weights) says which decoder is in use: 0 is the
identity. One graph serves everything: `sample(obs, noise)` draws z = mu(s) + sigma * noise and decodes
it, so zero noise is the latent mean decoded, and export traces the latent policy and the decoder's
K steps as one ONNX / TorchScript graph."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from robopol.config import ActorConfig
from robopol.errors import ConfigError
from robopol.policies.base import LOG_2PI, Actor, ChunkSpec
from robopol.policies.diffusion import DiffusionActor
from robopol.policies.flow import FlowActor
from robopol.policies.gaussian import GaussianActor
from robopol.policies.generative import GenerativeActor, run_steps
from robopol.policies.networks import ACTIVATIONS
from robopol.typed_config import field

ATANH_LIMIT = 1 - 1e-6  # |a| is kept below this before atanh, so a demonstrated action at a bound stays finite


class LatentFlowActor(Actor):
    def __init__(self, spec: ChunkSpec, hidden: Sequence[int] = (64, 64), activation: str = "tanh",
                 init_log_std: float = 0.0, decoder_hidden: Sequence[int] = (128, 128, 128, 128),
                 decoder_activation: str = "mish", flow_steps: int = 10, time_dim: int = 16,
                 squash: str = "tanh", decoder: str = "flow", denoising_steps: int = 20) -> None:
        super().__init__(spec)
        self.latent_args = (hidden, activation, init_log_std)
        self.decoder_kind, self.denoising_steps = decoder, denoising_steps
        self.decoder_hidden, self.flow_steps, self.time_dim, self.decoder_activation = (
            decoder_hidden, flow_steps, time_dim, decoder_activation)
        self.squash = squash
        self.latent = GaussianActor(spec, *self.latent_args)
        self.decoder = self.fresh_decoder()
        self.register_buffer("stage", torch.zeros((), dtype=torch.int64))

    def fresh_latent(self) -> GaussianActor:
        """A newly initialised latent policy (mean ~0, std exp(init_log_std)) of this actor's settings."""
        return GaussianActor(self.spec, *self.latent_args)

    def fresh_decoder(self) -> GenerativeActor:
        """A newly initialised decoder of this actor's settings."""
        if self.decoder_kind == "ddim":
            return DiffusionActor(self.spec, self.decoder_hidden, self.denoising_steps, ddim_steps=self.flow_steps,
                                  ddim_eta=0.0, time_dim=self.time_dim, activation=self.decoder_activation)
        return FlowActor(self.spec, self.decoder_hidden, self.flow_steps, self.time_dim, self.decoder_activation)

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return self.latent.noise_shape(batch)

    def decode(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """g(s, z): z itself in stage 0, else the decoder's K deterministic steps from x = z."""
        if int(self.stage) == 0:
            return z
        return run_steps(self.decoder, obs, z, keep_from=self.decoder.num_sampling_steps)[-1]

    def act_on_latent(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The action chunk the env sees for latent z: the squashed decoding, or a DDIM decoder's own output."""
        u = self.decode(obs, z)
        return u if self.decoder_kind == "ddim" and int(self.stage) > 0 else self.squash_action(u)

    def decoder_target(self, actions: torch.Tensor) -> torch.Tensor:
        """What a decoder learns from executed action chunks: the pre-squash chunks for a flow decoder,
        the chunks themselves for a DDIM decoder."""
        return actions if self.decoder_kind == "ddim" else self.unsquash_action(actions)

    def squash_action(self, u: torch.Tensor) -> torch.Tensor:
        """What the env sees of a decoded chunk: tanh(u), or u as is (the normaliser clips it to the bounds)."""
        return torch.tanh(u) if self.squash == "tanh" else u

    def unsquash_action(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.atanh(actions.clamp(-ATANH_LIMIT, ATANH_LIMIT)) if self.squash == "tanh" else actions

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.act_on_latent(obs, self.latent.sample(obs, noise))

    # --- the latent policy's likelihood: every latent element, since the decoder mixes the whole chunk ---
    def latent_log_prob(self, mean: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log pi(z|s) of the latent policy's mean mu(s) (`latent.mean(obs)`, which the caller may reuse),
        summed over all horizon x act_dim latent elements: (B,)."""
        log_std = self.latent.log_std
        eps = (z - mean) * torch.exp(-log_std)
        return (-0.5 * eps.pow(2) - log_std - 0.5 * LOG_2PI).sum(dim=(1, 2))

    def latent_noise_log_prob(self, noise: torch.Tensor) -> torch.Tensor:
        """latent_log_prob(obs, latent.sample(obs, noise)) without a forward pass."""
        return (-0.5 * noise.pow(2) - self.latent.log_std - 0.5 * LOG_2PI).sum(dim=(1, 2))

    def latent_entropy(self) -> torch.Tensor:
        return (self.latent.log_std + 0.5 * (1.0 + LOG_2PI)).sum()

    def decoder_loss(self, obs: torch.Tensor, targets: torch.Tensor, noise_samples: int) -> torch.Tensor:
        """The decoder's own training loss (flow matching, or eps prediction) from N(0, I) to `targets`
        (`decoder_target` chunks), with noise_samples noise (and time) draws per chunk."""
        return self.decoder.loss(obs.repeat_interleave(noise_samples, 0), targets.repeat_interleave(noise_samples, 0))

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Behaviour cloning of the decoder: with z ~ N(0, I) the actor then reproduces the demonstrations."""
        return self.decoder_loss(obs, self.decoder_target(actions), 1)


@dataclass
class LatentFlowActorConfig(ActorConfig):
    type: str = "latent_flow"
    init_log_std: float = field(0.0, doc="log std of a fresh latent policy; 0 makes it N(0, I) at its start")
    decoder_hidden: list[int] = field(gt=0, default_factory=lambda: [128, 128, 128, 128])
    decoder_activation: str = field("mish", choices=tuple(ACTIVATIONS))
    flow_steps: int = field(10, ge=1, doc="K deterministic Euler steps of the decoder")
    time_dim: int = field(16, ge=2)
    squash: str = field("tanh", choices=("tanh", "none"),
                        doc="tanh: the env sees tanh(g(s, z)) (GoRL); none: g(s, z) clipped to the task's bounds")
    decoder: str = field("flow", choices=("flow", "ddim"),
                         doc="flow: K Euler steps of a flow; ddim: K deterministic DDIM steps of a diffusion model")
    denoising_steps: int = field(20, ge=1, doc="ddim: the diffusion's training timesteps, of which it samples flow_steps")

    def __post_init__(self) -> None:
        if self.decoder == "ddim" and self.flow_steps > self.denoising_steps:
            raise ConfigError(f"policy.actor.flow_steps: {self.flow_steps} exceeds denoising_steps={self.denoising_steps} "
                              "of the DDIM decoder")

    def build(self, spec: ChunkSpec) -> LatentFlowActor:
        return LatentFlowActor(spec, self.hidden, self.activation, self.init_log_std, self.decoder_hidden,
                               self.decoder_activation, self.flow_steps, self.time_dim, self.squash, self.decoder,
                               self.denoising_steps)
