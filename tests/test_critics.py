"""Q ensemble heads are independent networks; EMA targets follow by Polyak averaging; TD targets."""

import torch

from robopol.critics import EMATarget, QEnsemble, ValueCritic, bootstrapped_target, q_loss


def test_q_ensemble_heads_match_separate_linear_stacks():
    q = QEnsemble(obs_dim=3, n_obs_steps=1, act_dim=2, horizon=2, heads=3, hidden=(8,), activation="relu")
    obs, act = torch.randn(5, 1, 3), torch.randn(5, 2, 2)
    out = q(obs, act)
    assert out.shape == (3, 5)
    x = torch.cat([obs.reshape(5, -1), act.reshape(5, -1)], -1)
    first, last = q.net[0], q.net[2]
    for h in range(3):
        hidden = torch.relu(x @ first.weight[h] + first.bias[h])
        torch.testing.assert_close(out[h], (hidden @ last.weight[h] + last.bias[h]).squeeze(-1))


def test_ema_target_moves_by_tau_towards_online():
    online = ValueCritic(2, 1, (4,))
    ema = EMATarget(online, tau=0.25)
    before = [p.clone() for p in ema.target.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    ema.update()
    for b, t, o in zip(before, ema.target.parameters(), online.parameters()):
        torch.testing.assert_close(t, b + 0.25 * (o - b))
    assert not any(p.requires_grad for p in ema.target.parameters())


def test_bootstrapped_target_and_q_loss_fit_a_fixed_target():
    obs = torch.randn(64, 1, 3)
    bootstrap = (obs[:, 0, 0] > 0).float() * 0.5  # a terminal (0) or a discounted (0.5) transition
    batch = {"obs": obs, "actions": torch.randn(64, 1, 2), "reward": torch.ones(64), "bootstrap": bootstrap,
             "next_obs": torch.randn(64, 1, 3)}
    target = bootstrapped_target(lambda next_obs: torch.full((next_obs.shape[0],), 4.0))
    expected = 1.0 + bootstrap * 4.0
    torch.testing.assert_close(target(batch), expected)
    q = QEnsemble(3, 1, 2, 1, heads=2, hidden=(32,))
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    first = q_loss(q, batch, target).item()
    for _ in range(300):
        opt.zero_grad()
        loss = q_loss(q, batch, target)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first
