"""How far bf16 autocast moves a trained SAC critic: |Q error| and the cosine between the action gradients
of min-Q in bf16 and in fp32, over the states and sampled actions of one stochastic episode; once with every
layer under autocast (as `train.autocast=bf16` runs the update) and once with the input layer kept in fp32.

    python bench/sac_bf16_precision.py bench/out/sac-halfcheetah_300k/robopol-sac-seed0

A diagnostic, not a benchmark (seconds on one core; figures quoted in the README's SAC section)."""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch

from robopol.checkpoint import load_checkpoint, load_policy
from robopol.critics import QEnsemble


def min_q_and_gradient(critic: QEnsemble, obs: torch.Tensor, actions: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every head's Q (heads, B) and grad_a of min-Q (B, H * A) in `mode`: fp32, bf16 or bf16_input_fp32."""
    a = actions.clone().requires_grad_(True)
    x = torch.cat([obs.reshape(len(obs), -1), a.reshape(len(a), -1)], dim=-1)
    h = x.unsqueeze(0).expand(critic.heads, *x.shape)
    layers = list(critic.net)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "fp32", cache_enabled=False):
        if mode == "bf16_input_fp32":
            with torch.autocast("cpu", enabled=False):
                h = layers.pop(0)(h)
        for layer in layers:
            h = layer(h)
    q = h.squeeze(-1).float()
    (grad,) = torch.autograd.grad(q.min(dim=0).values.sum(), a)
    return q.detach(), grad.reshape(len(grad), -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a SAC run folder (its critic and policy)")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ckpt = load_checkpoint(args.run)
    policy = load_policy(ckpt)
    critic = QEnsemble.for_chunks(ckpt.spec, ckpt.config.policy.critic, heads=2)
    ckpt.load_into("critic", critic, "the precision check")
    env = gym.make(ckpt.config.task.env_id)
    obs, _ = env.reset(seed=args.seed)
    states, actions = [], []
    with torch.inference_mode():
        for _ in range(1000):
            o = torch.as_tensor(obs, dtype=torch.float32)[None, None]
            a = policy(o, torch.randn(policy.noise_shape(1)))
            states.append(o[0])
            actions.append(a[0])
            obs, _, terminated, truncated, _ = env.step(a.reshape(-1).numpy())
            if terminated or truncated:
                obs, _ = env.reset()
    s, a = torch.stack(states), torch.stack(actions)
    q32, g32 = min_q_and_gradient(critic, s, a, "fp32")
    for mode in ("bf16", "bf16_input_fp32"):
        q, g = min_q_and_gradient(critic, s, a, mode)
        cos = torch.nn.functional.cosine_similarity(g, g32, dim=1)
        print(f"{mode:16s} |Q error| mean {(q - q32).abs().mean():.3f} (Q mean {q32.mean():.0f}); "
              f"gradient cosine median {cos.median():.3f}, 10th percentile {cos.quantile(0.1):.3f}")


if __name__ == "__main__":
    main()
