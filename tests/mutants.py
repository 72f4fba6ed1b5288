"""Planted bugs: each one-line mutation below must make at least one non-slow test fail.

    python tests/mutants.py              # every mutant against its own test files (default: the learner tests)
    python tests/mutants.py --full       # every mutant against the whole non-slow suite (slower)
    python tests/mutants.py -k sac -j 2  # the mutants whose description or file mentions "sac", two at a time
    python tests/mutants.py --list

Each mutation replaces one exact piece of text, which must occur exactly once in its file: when a
refactor moves or rewrites that text, the script says so and fails, instead of counting a mutant that
was never planted as killed. Mutations are applied to scratch copies of the tree (never to the checkout
itself); the unmutated copy must pass first. A mutant may name the test files that pin it (`tests`);
the others run against LEARNER_TESTS. Exit status: 0 when every mutant is killed, 1 otherwise.
(The file name does not start with `test_`, so pytest does not collect it.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the files that pin the learners' math, the fastest to fail first
LEARNER_TESTS = [
    "tests/test_taco_math.py",
    "tests/test_offline_math.py",
    "tests/test_learner_math.py",
    "tests/test_offline_agents.py",
    "tests/test_agents.py",
]

# the test files of the round-two mutants
ARCH, GRAD, ALIGN = "tests/test_architecture.py", "tests/test_actor_gradient.py", "tests/test_format_alignment.py"
FORMATS, SCHED = "tests/test_data_formats.py", "tests/test_schedules.py"
CQL_KEYS = ("cql_alpha", "cql_temp", "cql_samples")  # round three: each left out of CQL's options in turn


@dataclass(frozen=True)
class Mutant:
    path: str
    original: str
    replacement: str
    what: str
    tests: tuple[str, ...] = ()  # the test files that pin it (empty: LEARNER_TESTS)


M = Mutant
MUTANTS = [
    # ------------------------------------------------------------ TACO / CURL / reward (agents/taco.py)
    M(
        "agents/taco.py",
        'self.logits(self.G(za).float(), zt["future_obs"])',
        'self.logits(self.G(za).float(), zt["obs"])',
        "TACO target encodes obs instead of future_obs",
    ),
    M(
        "agents/taco.py",
        "codes = self.tok(action_seq) if",
        "codes = self.tok(action_seq[:, :1].expand_as(action_seq)) if",
        "TACO action-sequence code uses the first action K times",
    ),
    M(
        "agents/taco.py",
        "return self.seq(codes.flatten(1))",
        "return self.seq(codes.flip(1).flatten(1))",
        "TACO action-sequence code in reverse order",
    ),
    M(
        "agents/taco.py",
        "z = self.proj_s(anchor).float()",
        "z = self.proj_s(anchor.detach()).float()",
        "aux anchor detached inside the module (loss never reaches the encoder)",
    ),
    M(
        "agents/taco.py",
        "logits = anchors.float() @ (self.W @ targets.float().T)",
        "logits = anchors.float() @ (self.W.T @ targets.float().T)",
        "bilinear similarity uses W transposed",
    ),
    M(
        "agents/taco.py",
        "return logits - logits.max(dim=1, keepdim=True).values",
        "return logits",
        "logits not shifted by their row max",
    ),
    M(
        "agents/taco.py",
        "labels = torch.arange(z.shape[0], device=z.device)",
        "labels = torch.arange(z.shape[0], device=z.device).flip(0)",
        "InfoNCE positives off the diagonal",
    ),
    M("agents/taco.py", "total = total + self.weight(term) * value", "total = total + value", "term weights ignored"),
    M(
        "agents/taco.py",
        '{"curl": self.curl_weight, "taco": self.taco_weight,',
        '{"curl": self.taco_weight, "taco": self.curl_weight,',
        "CURL and TACO weights swapped",
    ),
    M(
        "agents/taco.py",
        '"taco": self.taco_weight, "reward": self.reward_weight}',
        '"taco": self.taco_weight, "reward": self.taco_weight}',
        "reward term takes the TACO weight",
    ),
    M(
        "agents/taco.py",
        'F.mse_loss(self.R(za).float(), batch["reward"].float())',
        'F.mse_loss(self.R(za).float(), batch["discount"].float())',
        "reward head regresses the discount",
    ),
    M(
        "agents/taco.py",
        'za = torch.cat([z, self.encode_actions(batch["action_seq"]).float()], dim=-1)',
        'za = torch.cat([z, 0 * self.encode_actions(batch["action_seq"]).float()], dim=-1)',
        "TACO predictor ignores the actions",
    ),
    M("agents/taco.py", "self.logits(self.G(za).float(),", "self.logits(z,", "TACO skips the predictor G"),
    M("agents/taco.py", "with torch.no_grad():", "if True:", "aux targets not under stop-gradient"),
    M(
        "agents/taco.py",
        'self.logits(z, zt["obs"])',
        "self.logits(z, z.detach())",
        "CURL positive is the anchor itself, not a second augmentation",
    ),
    M(
        "agents/taco.py",
        'keys.append("future_obs")',
        'keys.append("next_obs")',
        "TACO target is next_obs (n steps ahead) instead of future_obs (K steps ahead)",
    ),
    # ------------------------------------------------------------ shared update (agents/learner.py)
    M(
        "agents/learner.py",
        'anchor = self.encoder(self.aug(batch["obs"]))',
        'anchor = self.encoder(self.aug(batch["obs"])).detach()',
        "aux anchor detached (reference update)",
    ),
    M(
        "agents/learner.py",
        "aux_loss, m = self.aux.loss(batch, feat, encoded[1:])",
        "aux_loss, m = self.aux.loss(batch, feat.detach(), encoded[1:])",
        "aux anchor detached (single optimizer)",
    ),
    M(
        "agents/learner.py",
        "augmented = [self.aug(x) for x in frames]",
        "augmented = [x for x in frames]",
        "no-grad targets (next obs, CURL positive, future obs) not augmented",
    ),
    M(
        "agents/learner.py",
        "targets = self.encode_nograd([batch[k] for k in self.aux.nograd_keys])",
        'targets = self.encode_nograd([batch["obs"] for k in self.aux.nograd_keys])',
        "aux targets all encode obs (TACO target is not future_obs)",
    ),
    M(
        "agents/learner.py",
        "aux_keys = self.aux.nograd_keys if self.aux is not None else []\n        with self.autocast():\n"
        '            feat = self.encoder(self.aug(batch["obs"]))',
        "aux_keys = self.aux.nograd_keys if self.aux is not None else []\n        with self.autocast():\n"
        '            feat = self.encoder(batch["obs"])',
        "critic anchor not augmented",
    ),
    M(
        "agents/learner.py",
        'encoded = self.encode_nograd([batch["next_obs"]]',
        'encoded = self.encode_nograd([batch["obs"]]',
        "critic target evaluated at obs instead of next_obs",
    ),
    M(
        "agents/learner.py",
        "F.mse_loss(q1.float(), target_q.float()) + F.mse_loss(q2.float(), target_q.float())",
        "F.mse_loss(q1.float(), target_q.float()) + F.mse_loss(q1.float(), target_q.float())",
        "critic loss trains Q1 twice and Q2 never",
    ),
    M(
        "agents/learner.py",
        'return batch["reward"] + batch["discount"] * self._target_value(next_feat, step)',
        'return batch["reward"] + 0.99 * self._target_value(next_feat, step)',
        "critic target ignores the batch discount",
    ),
    M(
        "agents/learner.py",
        'return batch["reward"] + batch["discount"] * self._target_value(next_feat, step)',
        'return batch["reward"].mean() + batch["discount"] * self._target_value(next_feat, step)',
        "critic target uses the batch-mean reward",
    ),
    M(
        "agents/learner.py",
        "with torch.no_grad():\n            return batch[",
        "if True:\n            return batch[",
        "critic target differentiated",
    ),
    M(
        "agents/learner.py",
        "if not eval_mode and step < self.expl_steps:",
        "if step < self.expl_steps:",
        "act(eval_mode=True) random during the exploration steps",
    ),
    M(
        "agents/learner.py",
        "return (torch.rand(self.action_dim) * 2.0 - 1.0).numpy()",
        "return torch.rand(self.action_dim).numpy()",
        "exploration actions uniform in [0, 1] instead of [-1, 1]",
    ),
    M("agents/learner.py", 'self.opts["critic"].step()', "pass", "critic optimizer never steps"),
    M("agents/learner.py", 'self.opts["actor"].step()', "pass", "actor optimizer never steps"),
    M("agents/learner.py", 'self.opts["aux"].step()', "pass", "aux optimizer never steps"),
    M(
        "agents/learner.py",
        "soft_update(self.critic, self.critic_target, self.critic_tau)",
        "pass",
        "critic target never updated",
    ),
    M(
        "agents/learner.py",
        'self.opts["critic"] = adam(list(self.critic.parameters()) + shared, lr, adam_impl)',
        'self.opts["critic"] = adam(list(self.critic.parameters()), lr, adam_impl)',
        "critic loss does not train the encoder",
    ),
    M(
        "agents/learner.py",
        "shared, lr, adam_impl)\n            if self.aux is not None:\n"
        '                self.opts["aux"] = adam(shared + aux_own, lr, adam_impl)',
        "shared, lr, adam_impl)\n            if self.aux is not None:\n"
        '                self.opts["aux"] = adam(aux_own, lr, adam_impl)',
        "aux loss does not train the encoder",
    ),
    M(
        "agents/learner.py",
        "self.aug = RandomShift(pad=4)",
        "self.aug = RandomShift(pad=2)",
        "augmentation shifts by up to 2 pixels instead of 4",
    ),
    M(
        "agents/learner.py",
        '"actor": adam(self.actor_params, lr, adam_impl)',
        '"actor": adam(self.actor_params, 1e-3, adam_impl)',
        "actor optimizer ignores the learning rate",
    ),
    M(
        "agents/learner.py",
        'self.opts["aux"] = adam(shared + aux_own, lr, adam_impl)\n        elif',
        'self.opts["aux"] = adam(shared + aux_own, 2 * lr, adam_impl)\n        elif',
        "BC's aux optimizer ignores the learning rate",
    ),
    M(
        "agents/learner.py",
        'self.opts["critic"] = adam(list(self.critic.parameters()) + shared + aux_own, lr, adam_impl)',
        'self.opts["critic"] = adam(list(self.critic.parameters()) + shared, lr, adam_impl)',
        "single optimizer leaves out the auxiliary heads",
    ),
    M(
        "agents/learner.py",
        "return list(self.encoder(torch.cat(augmented)).split([len(x) for x in augmented]))",
        "return list(self.encoder(torch.cat(augmented)).split([len(x) for x in augmented]))[::-1]",
        "batched no-grad encodings returned in the wrong order",
    ),
    M(
        "agents/learner.py",
        "aux_loss, m = self.aux.loss(batch, feat, encoded[1:])",
        "aux_loss, m = self.aux.loss(batch, feat, encoded[:-1])",
        "single optimizer hands the aux module next_obs",
    ),
    M(
        "agents/learner.py",
        "self.critic_target.load_state_dict(self.critic.state_dict())",
        "pass",
        "critic target not initialised to the critic",
    ),
    M(
        "agents/learner.py",
        'state.update({f"opt/{k}": o.state_dict() for k, o in self.opts.items()})',
        "pass",
        "state_dict leaves out the optimizers",
    ),
    M("agents/learner.py", 'o.load_state_dict(state[f"opt/{k}"])', "pass", "load_state_dict skips the optimizers"),
    # ------------------------------------------------------------ networks (agents/nets.py)
    M(
        "agents/nets.py",
        "bias = first.bias - 0.5 * first.weight.sum(dim=(1, 2, 3))",
        "bias = first.bias",
        "encoder skips the -0.5 centring",
    ),
    M("agents/nets.py", "weight = first.weight / 255.0", "weight = first.weight", "encoder skips the /255 scaling"),
    M(
        "agents/nets.py",
        "return self.convnet(obs.float() / 255.0 - 0.5).flatten(1)",
        "return self.convnet(obs.float() / 255.0).flatten(1)",
        "reference-layout encoder skips the -0.5 centring",
    ),
    M("agents/nets.py", "return self.q1(h), self.q2(h)", "return self.q1(h), self.q1(h)", "critic returns Q1 twice"),
    M(
        "agents/nets.py",
        "torch._foreach_lerp_(list(target.parameters()), list(net.parameters()), tau)",
        "torch._foreach_lerp_(list(target.parameters()), list(net.parameters()), 2 * tau)",
        "target EMA rate doubled",
    ),
    M(
        "agents/nets.py",
        "shift = torch.randint(0, 2 * self.pad + 1, (n, 2), device=x.device) - self.pad",
        "shift = torch.randint(0, self.pad + 1, (n, 2), device=x.device)",
        "random shift only shifts one way",
    ),
    # ------------------------------------------------------------ DrQ-v2 (agents/drqv2.py)
    M(
        "agents/drqv2.py",
        "        return torch.min(q1, q2)\n",
        "        return q1\n",
        "DrQ-v2 target uses Q1 instead of min(Q1, Q2)",
    ),
    M(
        "agents/drqv2.py",
        "q1, q2 = self.critic_target(next_feat,",
        "q1, q2 = self.critic(next_feat,",
        "DrQ-v2 target from the online critic",
    ),
    M(
        "agents/drqv2.py",
        "next_action = truncated_normal_sample(self._mean(next_feat), std, self.std_clip)",
        "next_action = truncated_normal_sample(self._mean(next_feat), std)",
        "DrQ-v2 target action noise unclipped",
    ),
    M(
        "agents/drqv2.py",
        "action = truncated_normal_sample(self._mean(feat), std, self.std_clip)",
        "action = truncated_normal_sample(self._mean(feat), std)",
        "DrQ-v2 actor-loss action noise unclipped",
    ),
    M(
        "agents/drqv2.py",
        "return action, torch.min(q1, q2).float(), std",
        "return action, q1.float(), std",
        "DrQ-v2 actor loss uses Q1 only",
    ),
    M(
        "agents/drqv2.py",
        "q1, q2 = self.critic(feat, self.action_code(action))",
        "q1, q2 = self.critic_target(feat, self.action_code(action))",
        "DrQ-v2 actor loss from the target critic",
    ),
    M(
        "agents/drqv2.py",
        "return mean if eval_mode else truncated_normal_sample(mean, schedule(self.std_schedule, step))",
        "return truncated_normal_sample(mean, schedule(self.std_schedule, step))",
        "DrQ-v2 evaluation adds noise",
    ),
    M("agents/drqv2.py", "return torch.tanh(self.actor(feat))", "return self.actor(feat)", "DrQ-v2 mean not squashed"),
    M(
        "agents/drqv2.py",
        "noise = torch.randn_like(mean) * std",
        "noise = torch.randn_like(mean)",
        "exploration noise ignores the std schedule",
    ),
    M(
        "agents/drqv2.py",
        "noise = noise.clamp(-clip, clip)",
        "noise = noise.clamp(-2 * clip, 2 * clip)",
        "noise clipped at twice the bound",
    ),
    M(
        "agents/drqv2.py",
        "return (1.0 - mix) * init + mix * final",
        "return (1.0 - mix) * final + mix * init",
        "std schedule runs backwards",
    ),
    # ------------------------------------------------------------ SAC (agents/sac.py)
    M(
        "agents/sac.py",
        "return torch.min(q1, q2).float() - self.temperature().detach() * log_prob",
        "return torch.min(q1, q2).float() + self.temperature().detach() * log_prob",
        "SAC entropy term's sign flipped in the target",
    ),
    M(
        "agents/sac.py",
        "q1, q2 = self.critic_target(next_feat,",
        "q1, q2 = self.critic(next_feat,",
        "SAC target from the online critic",
    ),
    M(
        "agents/sac.py",
        "return torch.min(q1, q2).float() - self.temperature().detach() * log_prob",
        "return q1.float() - self.temperature().detach() * log_prob",
        "SAC target uses Q1 instead of min(Q1, Q2)",
    ),
    M("agents/sac.py", 'self.opts["alpha"].step()', "pass", "SAC alpha never stepped"),
    M(
        "agents/sac.py",
        "alpha_loss = -(self.temperature() * (self._log_prob + self.target_entropy)).mean()",
        "alpha_loss = (self.temperature() * (self._log_prob + self.target_entropy)).mean()",
        "SAC alpha loss sign flipped",
    ),
    M(
        "agents/sac.py",
        "alpha_loss = -(self.temperature() * (self._log_prob + self.target_entropy)).mean()",
        "alpha_loss = -(self.temperature() * (-self._log_prob + self.target_entropy)).mean()",
        "SAC alpha loss uses the entropy where the log-prob belongs",
    ),
    M(
        "agents/sac.py",
        "log_prob = log_prob - 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))",
        "log_prob = log_prob + 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))",
        "SAC tanh log-prob correction's sign flipped",
    ),
    M(
        "agents/sac.py",
        "- log_std - 0.5 * math.log(2 * math.pi)\n",
        "+ log_std - 0.5 * math.log(2 * math.pi)\n",
        "SAC Gaussian log-prob normaliser's sign flipped",
    ),
    M(
        "agents/sac.py",
        "return torch.tanh(x), log_prob.sum(-1, keepdim=True), torch.tanh(mu)",
        "return torch.tanh(x), log_prob.mean(-1, keepdim=True), torch.tanh(mu)",
        "SAC log-prob averaged over action dimensions instead of summed",
    ),
    M(
        "agents/sac.py",
        "log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1.0)",
        "log_std = torch.tanh(log_std)",
        "SAC log-std not mapped into [LOG_STD_MIN, LOG_STD_MAX]",
    ),
    M(
        "agents/sac.py",
        "x = mu + log_std.exp() * torch.randn_like(mu)",
        "x = mu + torch.randn_like(mu)",
        "SAC sample ignores the std",
    ),
    M(
        "agents/sac.py",
        "loss = (alpha * log_prob - torch.min(q1, q2).float()).mean()",
        "loss = (-alpha * log_prob - torch.min(q1, q2).float()).mean()",
        "SAC actor loss entropy sign flipped",
    ),
    M(
        "agents/sac.py",
        "loss = (alpha * log_prob - torch.min(q1, q2).float()).mean()",
        "loss = (alpha * log_prob - q1.float()).mean()",
        "SAC actor loss uses Q1 only",
    ),
    M("agents/sac.py", "if eval_mode:", "if False:", "SAC evaluation samples instead of taking the mean"),
    M(
        "agents/sac.py",
        "torch.tanh(self.actor(feat).float().chunk(2, dim=-1)[0])",
        "torch.tanh(self.actor(feat).float().chunk(2, dim=-1)[1])",
        "SAC evaluation acts with the log-std head",
    ),
    M(
        "agents/sac.py",
        "self.target_entropy = -float(action_dim)",
        "self.target_entropy = float(action_dim)",
        "SAC target entropy +|A| instead of -|A|",
    ),
    M(
        "agents/sac.py",
        "self.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha)))",
        "self.log_alpha = nn.Parameter(torch.tensor(init_alpha))",
        "SAC initial alpha is exp(init_alpha)",
    ),
    # ------------------------------------------------------------ offline learners (bc, td3bc, cql, iql)
    M(
        "agents/bc.py",
        'loss = F.mse_loss(torch.tanh(self.actor(feat)).float(), batch["action"].float())',
        'loss = F.mse_loss(self.actor(feat).float(), batch["action"].float())',
        "BC regresses the unsquashed output",
    ),
    M(
        "agents/bc.py",
        "return torch.tanh(self.actor(feat))",
        "return self.actor(feat)",
        "BC acts with the unsquashed output",
    ),
    M(
        "agents/learner.py",
        "self.actor_params += list(self.encoder.parameters())",
        "pass",
        "BC loss does not train the encoder",
    ),
    M(
        "agents/learner.py",
        'with self.autocast():\n                feat = self.encoder(self.aug(batch["obs"]))',
        'with self.autocast():\n                feat = self.encoder(batch["obs"])',
        "BC frames not augmented",
    ),
    M(
        "agents/td3bc.py",
        "lam = self.bc_alpha / q.detach().abs().mean()",
        "lam = self.bc_alpha / q.abs().mean()",
        "TD3+BC lambda differentiated",
    ),
    M(
        "agents/td3bc.py",
        "lam = self.bc_alpha / q.detach().abs().mean()",
        "lam = self.bc_alpha / q.detach().mean()",
        "TD3+BC lambda divides by mean Q instead of mean |Q|",
    ),
    M("agents/td3bc.py", "loss = -lam * q.mean() + bc", "loss = lam * q.mean() + bc", "TD3+BC Q term's sign flipped"),
    M(
        "agents/td3bc.py",
        "loss = -lam * q.mean() + bc",
        "loss = -lam * q.mean() + bc.detach()",
        "TD3+BC behaviour-cloning term carries no gradient",
    ),
    M("agents/td3bc.py", "bc_alpha: float = 2.5", "bc_alpha: float = 1.0", "TD3+BC alpha default not 2.5"),
    M(
        "agents/cql.py",
        "penalty = self.conservative_penalty(q1) + self.conservative_penalty(q2)",
        "penalty = 2 * self.conservative_penalty(q1)",
        "CQL penalises Q1 twice and Q2 never",
    ),
    M(
        "agents/cql.py",
        'actions = torch.cat([batch["action"].unsqueeze(1), self.penalty_actions(',
        'actions = torch.cat([0 * batch["action"].unsqueeze(1), self.penalty_actions(',
        "CQL penalty's positive is not the data action",
    ),
    M(
        "agents/cql.py",
        "for f in (feat, next_feat)\n",
        "for f in (feat, feat)\n",
        "CQL next-state policy actions drawn at s",
    ),
    M(
        "agents/cql.py",
        "rand = torch.rand(feat.shape[0], n, self.action_dim, device=feat.device) * 2.0 - 1.0",
        "rand = torch.rand(feat.shape[0], n, self.action_dim, device=feat.device)",
        "CQL random actions in [0, 1]",
    ),
    M(
        "agents/cql.py",
        "soft_max = torch.logsumexp(q / self.cql_temp, dim=1) * self.cql_temp",
        "soft_max = torch.logsumexp(q, dim=1)",
        "CQL temperature ignored",
    ),
    M(
        "agents/cql.py",
        "return self.cql_alpha * (soft_max - q[:, 0]).mean()",
        "return (soft_max - q[:, 0]).mean()",
        "CQL alpha ignored",
    ),
    M(
        "agents/cql.py",
        "return self.cql_alpha * (soft_max - q[:, 0]).mean()",
        "return self.cql_alpha * (q[:, 0] - soft_max).mean()",
        "CQL penalty's sign flipped",
    ),
    M(
        "agents/cql.py",
        "td, metrics = self.td_loss(q1[:, 0], q2[:, 0], target_q)",
        "td, metrics = self.td_loss(q1[:, 1], q2[:, 1], target_q)",
        "CQL TD loss on a random action",
    ),
    M(
        "agents/cql.py",
        "z = self.critic.trunk(feat).unsqueeze(1)",
        "z = self.critic.trunk(feat.detach()).unsqueeze(1)",
        "CQL critic loss does not reach the encoder",
    ),
    M("agents/cql.py", "std, self.std_clip)\n", "std)\n", "CQL policy actions' noise unclipped"),
    M(
        "agents/iql.py",
        "weight = torch.where(diff < 0, 1.0 - tau, tau)",
        "weight = torch.where(diff < 0, tau, 1.0 - tau)",
        "IQL expectile weights swapped",
    ),
    M(
        "agents/iql.py",
        "value_loss = expectile_loss(q_data - v, self.expectile)",
        "value_loss = expectile_loss(v - q_data, self.expectile)",
        "IQL expectile residual's sign flipped",
    ),
    M(
        "agents/iql.py",
        "z = self.critic_target.trunk(feat) if z is None else z\n        return torch.min(*self.critic_target.heads(",
        "z = self.critic.trunk(feat) if z is None else z\n        return torch.min(*self.critic.heads(",
        "IQL value and advantage from the online critic",
    ),
    M(
        "agents/iql.py",
        'return torch.min(*self.critic_target.heads(z, self.action_code(batch["action"]).to(feat.dtype))).float()',
        'return self.critic_target.heads(z, self.action_code(batch["action"]).to(feat.dtype))[0].float()',
        "IQL uses Q1 instead of min(Q1, Q2)",
    ),
    M(
        "agents/iql.py",
        "return torch.exp(beta * adv).clamp(max=max_weight)",
        "return torch.exp(adv).clamp(max=max_weight)",
        "IQL advantage weights ignore beta",
    ),
    M(
        "agents/iql.py",
        "self._take_data_q_target(feat, batch) - self.value(feat), self.beta, self.max_weight",
        "self.value(feat) - self._take_data_q_target(feat, batch), self.beta, self.max_weight",
        "IQL advantage's sign flipped",
    ),
    M(
        "agents/iql.py",
        'log_prob = self._gaussian(feat).log_prob(batch["action"].float()).sum(-1, keepdim=True)',
        'log_prob = self._gaussian(feat).log_prob(batch["action"].float()).mean(-1, keepdim=True)',
        "IQL log-prob averaged over action dimensions",
    ),
    M(
        "agents/iql.py",
        "return self.value(next_feat)",
        "return 0.5 * self.value(next_feat)",
        "IQL TD target does not bootstrap from V(s')",
    ),
    M(
        "agents/iql.py",
        "return dist.mean if eval_mode else dist.sample()",
        "return dist.sample()",
        "IQL evaluation samples",
    ),
    M(
        "agents/iql.py",
        'self.opts["critic"].add_param_group({"params": list(self.value.parameters())})',
        "pass",
        "IQL value head never stepped",
    ),
    M("agents/iql.py", "v = self.value(feat.detach())", "v = self.value(feat)", "IQL value loss reaches the encoder"),
    M(
        "agents/iql.py",
        "cached_feat.data_ptr() == feat.data_ptr()\n",
        "True or cached_feat.data_ptr() == feat.data_ptr()\n",
        "IQL actor reuses a cached Q_target of other features",
    ),
    M(
        "agents/iql.py",
        "None if self.latent_critic else q_data)",
        "q_data)",
        "IQL actor reuses Q_target of the action code before the critic step moved it",
    ),
    # ============================================================ round two: written by reading the code
    # (architecture, the actor's gradient through a saturated sample, per-format field alignment,
    # schedules and precedence, offline learners, the SB3 buffer); each names the files that pin it.
    # ------------------------------------------------------------ architecture (agents/nets.py)
    *[
        M("agents/nets.py", o, r, w, (ARCH,))
        for o, r, w in [
            (
                "nn.Conv2d(32, 32, 3, stride=1),\n            nn.ReLU(inplace=True),\n        )",
                "nn.Conv2d(32, 32, 3, stride=1),\n        )",
                "architecture: encoder's last ReLU removed",
            ),
            (
                "nn.Conv2d(c, 32, 3, stride=2),\n            nn.ReLU(inplace=True),",
                "nn.Conv2d(c, 32, 3, stride=2),\n            nn.ELU(inplace=True),",
                "architecture: encoder's first activation ELU instead of ReLU",
            ),
            (
                "return nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())",
                "return nn.Sequential(nn.Linear(repr_dim, feature_dim), "
                "nn.LayerNorm(feature_dim, elementwise_affine=False), nn.Tanh())",
                "architecture: trunk LayerNorm without its affine parameters",
            ),
            (
                "return nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())",
                "return nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.Identity(), nn.Tanh())",
                "architecture: trunk without its LayerNorm",
            ),
            (
                "return nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())",
                "return nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim, eps=1e-3), "
                "nn.Tanh())",
                "architecture: trunk LayerNorm eps 1e-3 instead of torch's 1e-5",
            ),
            (
                "def mlp(inp: int, hidden: int, out: int, depth: int = 2)",
                "def mlp(inp: int, hidden: int, out: int, depth: int = 1)",
                "architecture: MLPs with one hidden layer instead of two",
            ),
            (
                "layers += [nn.Linear(inp if i == 0 else hidden, hidden), nn.ReLU(inplace=True)]",
                "layers += [nn.Linear(inp if i == 0 else hidden, hidden), nn.Tanh()]",
                "architecture: MLP hidden activation tanh",
            ),
            (
                "nn.Linear(action_dim, 64), nn.Tanh(), nn.Linear(64, latent_dim)",
                "nn.Linear(action_dim, 64), nn.ReLU(), nn.Linear(64, latent_dim)",
                "architecture: TACO action encoder uses ReLU",
            ),
            (
                "return int(1.25 * action_dim) + 1",
                "return int(1.5 * action_dim) + 1",
                "architecture: latent action size int(1.5 |A|) + 1",
            ),
            (
                'nn.init.orthogonal_(m.weight, nn.init.calculate_gain("relu"))',
                "nn.init.orthogonal_(m.weight)",
                "architecture: convolutions initialised without the ReLU gain",
            ),
            (
                "h = torch.cat([z, action_code], dim=-1)",
                "h = torch.cat([action_code, z], dim=-1)",
                "architecture: Q heads read (action, features) instead of (features, action)",
            ),
        ]
    ],
    # ------------------------------------------------------------ the actor's gradient through sampled actions
    *[
        M(f, o, r, w, (GRAD,))
        for f, o, r, w in [
            (
                "agents/drqv2.py",
                "return x - x.detach() + x.detach().clamp(-1.0 + eps, 1.0 - eps)",
                "return x.clamp(-1.0 + eps, 1.0 - eps)",
                "actor gradient: truncated normal's clamp blocks the gradient where saturated",
            ),
            (
                "agents/drqv2.py",
                "return x - x.detach() + x.detach().clamp(-1.0 + eps, 1.0 - eps)",
                "return x - x.detach() + x.detach().clamp(-1.0, 1.0)",
                "actor gradient: truncated normal reaches +-1 (no eps margin)",
            ),
            (
                "agents/drqv2.py",
                "x = mean + noise",
                "x = mean.detach() + noise",
                "actor gradient: truncated normal sample detached from the mean",
            ),
            (
                "agents/sac.py",
                "log_prob = log_prob - 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))",
                "log_prob = log_prob - torch.log(1.0 - torch.tanh(x).pow(2) + 1e-6)",
                "actor gradient: SAC tanh correction in the unstable log(1 - tanh^2 + eps) form",
            ),
            (
                "agents/sac.py",
                "x = mu + log_std.exp() * torch.randn_like(mu)",
                "x = mu + log_std.exp().detach() * torch.randn_like(mu)",
                "actor gradient: SAC sample does not reparameterise the std",
            ),
            (
                "agents/sac.py",
                "log_prob = -0.5 * ((x - mu) / log_std.exp()).pow(2)",
                "log_prob = -0.5 * ((x.detach() - mu) / log_std.exp()).pow(2)",
                "actor gradient: SAC log-prob of a detached sample (score-function mixup)",
            ),
        ]
    ],
    # ------------------------------------------------------------ import/export field alignment (runners/formats)
    *[
        M(f, o, r, w, (ALIGN, FORMATS))
        for f, o, r, w in [
            (
                "runners/data/formats/vd4rl.py",
                "yield frames, act[1:], rew[1:], np.ones(len(frames) - 1, np.float32)",
                "yield frames, act[:-1], rew[1:], np.ones(len(frames) - 1, np.float32)",
                "format alignment: V-D4RL 84px action of the frame's own record (off by one)",
            ),
            (
                "runners/data/formats/vd4rl.py",
                "yield frames, act[1:], rew[1:], np.ones(len(frames) - 1, np.float32)",
                "yield frames, act[1:], rew[:-1], np.ones(len(frames) - 1, np.float32)",
                "format alignment: V-D4RL 84px reward of the frame's own record (off by one)",
            ),
            (
                "runners/data/formats/vd4rl.py",
                "yield frames[s:e], act[s + 1 : e], rew[s + 1 : e], disc[s + 1 : e]",
                "yield frames[s:e], act[s + 1 : e], rew[s + 1 : e], disc[s : e - 1]",
                "format alignment: V-D4RL 64px discount off by one",
            ),
            (
                "runners/data/formats/vd4rl.py",
                "yield frames[s:e], act[s + 1 : e], rew[s + 1 : e], disc[s + 1 : e]",
                "yield frames[s:e], act[s : e - 1], rew[s + 1 : e], disc[s + 1 : e]",
                "format alignment: V-D4RL 64px action off by one",
            ),
            (
                "runners/data/formats/vd4rl.py",
                'disc = 1.0 - (vector(f["is_terminal"], file, "is_terminal", n) > 0)',
                'disc = 1.0 - (vector(f["is_first"], file, "is_first", n) > 0)',
                "format alignment: V-D4RL 64px discount from is_first instead of is_terminal",
            ),
            (
                "runners/data/formats/drqv2.py",
                'vector(f["reward"], file, "reward", n)[1:]',
                'vector(f["reward"], file, "reward", n)[:-1]',
                "format alignment: DrQ-v2 npz reward off by one",
            ),
            (
                "runners/data/formats/drqv2.py",
                'vector(f["discount"], file, "discount", n)[1:]',
                'vector(f["discount"], file, "discount", n)[:-1]',
                "format alignment: DrQ-v2 npz discount off by one",
            ),
            (
                "runners/data/formats/drqv2.py",
                'actions(f["action"], file, "action", n)[1:]',
                'actions(f["action"], file, "action", n)[:-1]',
                "format alignment: DrQ-v2 npz action off by one",
            ),
            (
                "runners/data/formats/common.py",
                "return x[:, -3:] if x.shape[1] != 3 else x",
                "return x[:, :3] if x.shape[1] != 3 else x",
                "format alignment: frame stacks keep their oldest frame",
            ),
            (
                "runners/data/formats/common.py",
                "return np.ascontiguousarray(x.transpose(0, 3, 1, 2))",
                "return np.ascontiguousarray(x.transpose(0, 3, 2, 1))",
                "format alignment: HWC frames read with H and W swapped",
            ),
            (
                "runners/data/formats/minari.py",
                "1.0 - term.astype(np.float32),\n",
                "term.astype(np.float32),\n",
                "format alignment: Minari import discount inverted",
            ),
            (
                "runners/data/formats/minari.py",
                'term = vector(_read(g, file, "terminations")',
                'term = vector(_read(g, file, "truncations")',
                "format alignment: Minari import reads truncations as terminals",
            ),
            (
                "runners/data/formats/minari.py",
                "trunc[-1] = not term[-1]",
                "trunc[-1] = term[-1]",
                "format alignment: Minari export truncation flag inverted",
            ),
            (
                "runners/data/formats/minari.py",
                "trunc[-1] = not term[-1]",
                "trunc[:] = not term[-1]",
                "format alignment: Minari export marks every step truncated",
            ),
            (
                "runners/data/formats/minari.py",
                "actions=acts.numpy(),",
                "actions=np.roll(acts.numpy(), 1, axis=0),",
                "format alignment: Minari export actions one step late",
            ),
            (
                "runners/data/formats/minari.py",
                "rewards=rews.numpy(),",
                "rewards=np.roll(rews.numpy(), -1),",
                "format alignment: Minari export rewards one step early",
            ),
        ]
    ],
    # ------------------------------------------------------------ schedules and precedence
    M(
        "agents/learner.py",
        "if not eval_mode and step < self.expl_steps:",
        "if not eval_mode and step <= self.expl_steps:",
        "schedule: uniform exploration one step past expl_steps",
        (SCHED,),
    ),
    M(
        "agents/drqv2.py",
        "mix = min(max(step / duration, 0.0), 1.0)",
        "mix = max(step / duration, 0.0)",
        "schedule: std schedule keeps falling after its duration",
        (SCHED,),
    ),
    *[
        M("runners/study/sweep.py", "{**base, **settings, **point, **extra_map}", r, w, (SCHED, "tests/test_sweep.py"))
        for r, w in [
            ("{**base, **point, **settings, **extra_map}", "sweep precedence: the variant wins over the grid"),
            ("{**settings, **base, **point, **extra_map}", "sweep precedence: the overrides win over the variant"),
            ("{**base, **settings, **extra_map, **point}", "sweep precedence: the grid wins over the command line"),
        ]
    ],
    # ------------------------------------------------------------ report: clocks and published curves
    *[
        M(path, original, replacement, what, ("tests/test_report.py",))
        for path, original, replacement, what in [
            (
                "runners/study/report.py",
                'return "update" if "updates" in self.config else "frame"',
                'return "frame"',
                "report: offline runs scored on the online clock",
            ),
            (
                "runners/study/report.py",
                '"update": update if update is not None or "frame" in by_clock else frame}',
                '"update": update}',
                "report: a report of offline runs only ignores --frame",
            ),
            (
                "runners/study/report.py",
                "xs = [x for x in curves[(task, label)][0].tolist() if x <= at]",
                "xs = [x for x in curves[(task, label)][0].tolist() if x < at]",
                "report: published comparison leaves out the report's own frame",
            ),
            (
                "runners/study/published.py",
                "(np.sum(published < value) + 0.5 * np.sum(published == value))",
                "(np.sum(published < value) + np.sum(published == value))",
                "report: published percentile counts ties whole",
            ),
            (
                "runners/study/published.py",
                "if value < published.min():",
                "if value <= published.min():",
                "report: a run at the published minimum placed below the range",
            ),
        ]
    ],
    # ------------------------------------------------------------ offline learners
    M(
        "agents/td3bc.py",
        'bc = F.mse_loss(action.float(), batch["action"].float())',
        'bc = F.mse_loss(self._mean(feat).float(), batch["action"].float())',
        "TD3+BC's BC term on the policy mean instead of the policy sample",
    ),
    M(
        "agents/iql.py",
        "LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0",
        "LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0",
        "IQL log-std floor -10 instead of -5",
    ),
    M(
        "agents/iql.py",
        "return torch.distributions.Normal(torch.tanh(mu), log_std.exp())",
        "return torch.distributions.Normal(mu, log_std.exp())",
        "IQL Gaussian around the unsquashed mean",
    ),
    M(
        "agents/iql.py",
        "loss = -(weights * log_prob).mean()",
        "loss = -log_prob.mean()",
        "IQL actor ignores the advantage weights (plain BC)",
    ),
    M(
        "agents/iql.py",
        "return (weight * diff.pow(2)).mean()",
        "return (weight * diff.abs()).mean()",
        "IQL expectile loss on |diff| (a quantile loss)",
    ),
    M(
        "agents/cql.py",
        "z = self.critic.trunk(feat).unsqueeze(1)",
        "z = self.critic_target.trunk(feat).unsqueeze(1)",
        "CQL scores with the target critic's trunk",
    ),
    # Equivalent, not counted: swapping feat and next_feat in CQL's penalty_actions call only reorders
    # the pi(s) and pi(s') samples inside one logsumexp (and the cql_q_policy mean over both).
    # ------------------------------------------------------------ SB3 buffer (sb3/buffer.py)
    *[
        M("sb3/buffer.py", o, r, w, ("tests/test_sb3.py",))
        for o, r, w in [
            (
                "(self.dones[last, e] * (1.0 - self.timeouts[last, e]))",
                "(self.dones[last, e] * 1.0)",
                "SB3 buffer: time limits count as terminals",
            ),
            (
                "np.full((batch_size, 1), self.gamma**n, np.float32)",
                "np.full((batch_size, 1), self.gamma ** (n - 1), np.float32)",
                "SB3 buffer: discount gamma^(n-1)",
            ),
            (
                "self.gamma ** np.arange(self.n_steps, dtype=np.float32)",
                "self.gamma ** np.arange(1, self.n_steps + 1, dtype=np.float32)",
                "SB3 buffer: n-step return discounts r_t by gamma",
            ),
            (
                "future = self._tensor(self._normalize_obs(self._obs_after(seq[:, -1], e2), env))",
                "future = self._tensor(self._normalize_obs(self.observations[seq[:, -1], e2], env))",
                "SB3 buffer: future observation is s_{t+K-1}",
            ),
            (
                "idx = (oldest + u[:, None] + np.arange(span - 1)) % self.buffer_size",
                "idx = (oldest + u[:, None] + np.arange(max(span - 2, 0))) % self.buffer_size",
                "SB3 buffer: sequences may run one step past an episode's end",
            ),
        ]
    ],
    # ---------------------------------------------- N training envs (runners/online/vector_loop.py, episode_staging.py)
    *[
        M(path, o, r, w, ("tests/test_episode_staging.py", "tests/test_num_envs.py"))
        for path, o, r, w in [
            (
                "runners/online/episode_staging.py",
                'ep["frames"].append(np.array(frame))',
                'ep["frames"].append(np.array(frame))\n'
                "        self.replay.add(frame, action, reward, discount)  # noqa",
                "staging also writes each step at once (envs interleave)",
            ),
            (
                "runners/online/vector_loop.py",
                'step = c["step"] + k\n',
                'step = c["step"]\n',
                "vector step: every update of the round reads the first env step's counter",
            ),
            (
                "runners/online/vector_loop.py",
                'w.send("reset", tr.reset_seed(c["episode"] + i))',
                'w.send("reset", tr.reset_seed(c["episode"]))',
                "every env of a round gets the same reset seed",
            ),
            (
                "runners/online/train.py",
                "close_all(self.train_workers)  # no training-env worker outlives its run",
                "pass",
                "training-env workers are never stopped",
            ),
        ]
    ],
    # ------------------------------------------------------------ eval workers, render cores, kept cameras
    *[
        M(path, o, r, w, ("tests/test_parallel_eval.py", "tests/test_envs.py"))
        for path, o, r, w in [
            (
                "runners/core/evaluation.py",
                "observations[w] = reply[0]",
                "observations[w] = np.zeros_like(reply[0])",
                "eval workers: the first action ignores the reset observation",
            ),
            (
                "runners/core/evaluation.py",
                "                    elif queue:\n",
                "                    elif False:\n",
                "a freed eval worker never takes the next episode",
            ),
            (
                "runners/core/evaluation.py",
                "if count is not None and count < before:",
                "if False:",
                "the learner's CPU threads are not handed to the eval workers",
            ),
            (
                "runners/core/workers.py",
                "return share if share > 1 else 0",
                "return share",
                "one core per worker keeps a llvmpipe rasterizer thread",
            ),
            (
                "runners/core/workers.py",
                'os.environ.setdefault("LP_NUM_THREADS", str(render_threads(count)))',
                'os.environ["LP_NUM_THREADS"] = str(render_threads(count))',
                "the user's LP_NUM_THREADS is overridden",
            ),
            (
                "envs/dmc.py",
                "if camera is None or camera._physics is not physics:",
                "if camera is None:",
                "a kept camera outlives its Physics (composer env reset)",
            ),
            (
                "envs/dmc.py",
                "return self._render(size, self._camera()).copy()",
                "return self._render(size, self._camera())",
                "video frames share the kept camera's buffer",
            ),
        ]
    ],
    # ------------------------------------------------------------ hung workers
    *[
        M(path, o, r, w, ("tests/test_parallel_eval.py", "tests/test_num_envs.py", "tests/test_collect_workers.py"))
        for path, o, r, w in [
            (
                "runners/core/workers.py",
                "        if not ready:\n            raise self.silent(limit)\n",
                "",
                "an env worker's recv does not notice a silent worker",
            ),
            (
                "runners/core/workers.py",
                "timeout = min(timeout, 1.0)",
                "timeout = timeout",
                "a hung worker's close waits on it as on a live one",
            ),
            (
                "runners/core/workers.py",
                "os.kill(proc.pid, signal.SIGCONT)",
                "pass",
                "terminate leaves a stopped worker holding its SIGTERM",
            ),
            (
                "runners/core/evaluation.py",
                "raise w.silent(limit)",
                "pass",
                "an eval worker silent while the others answer is waited on for ever",
            ),
            (
                "runners/data/collect_workers.py",
                "elif overdue(heard[conn], limit):",
                "elif False:",
                "a silent collect worker is waited on for ever",
            ),
            (
                "runners/core/workers.py",
                "    return value or None\n",
                "    return None\n",
                "TACO_WORKER_TIMEOUT is ignored (wait for ever)",
            ),
        ]
    ],
    # ============================================================ round three: behaviours a fresh set of planted
    # bugs got past (issue 32); each names the files that pin it.
    # ------------------------------------------------------------ N envs: a run that ends mid-round
    *[
        M(path, o, r, w, ("tests/test_num_envs.py", "tests/test_episode_staging.py"))
        for path, o, r, w in [
            (
                "runners/online/vector_loop.py",
                "staging.flush_all()  # a run that ends mid-round keeps what its envs stepped, as with one env",
                "pass",
                "N envs: a run that ends mid-round drops the unfinished episodes",
            ),
            (
                "runners/online/vector_loop.py",
                "staging.flush_all()  # a run that ends mid-round keeps what its envs stepped, as with one env",
                "staging.flush(0)",
                "N envs: a run that ends mid-round keeps env 0's unfinished episode only",
            ),
            (
                "runners/online/episode_staging.py",
                "for i in range(len(self._eps)):",
                "for i in reversed(range(len(self._eps))):",
                "N envs: a round's episodes written in reverse env order",
            ),
        ]
    ],
    # ------------------------------------------------------------ worker silence limits, timed from the command
    *[
        M(path, o, r, w, tests)
        for path, o, r, w, tests in [
            (
                "runners/core/workers.py",
                "raise self.died() from None\n        self.sent_at = time.monotonic()",
                "raise self.died() from None",
                "silence limit: an env worker's is timed from its start, not from its command",
                ("tests/test_parallel_eval.py",),
            ),
            (
                "runners/core/workers.py",
                "ready = wait(self.waits(), time_left(self.sent_at, limit))",
                "ready = wait(self.waits(), limit)",
                "silence limit: an env worker's is timed from the wait, not from its command",
                ("tests/test_parallel_eval.py",),
            ),
            (
                "runners/core/evaluation.py",
                "if not set(w.waits()) & ready and overdue(w.sent_at, limit):",
                "if overdue(w.sent_at, limit):",
                "silence limit: an eval worker's reply read late (a slow learner) is taken for a hang",
                ("tests/test_parallel_eval.py",),
            ),
            (
                "runners/data/collect_workers.py",
                "heard[conn] = time.monotonic()",
                "pass",
                "silence limit: a collect worker's is timed from its start, not from its last episode",
                ("tests/test_collect_workers.py",),
            ),
        ]
    ],
    # ------------------------------------------------------------ dataset array sizes and free space
    *[
        M("runners/data/datasets.py", o, r, w, ("tests/test_dataset_integrity.py",))
        for o, r, w in [
            (
                "if size != want[key]:",
                "if size < want[key]:",
                "dataset sizes: an array file longer than implied passes",
            ),
            (
                "for key, file in files.items():",
                "for key, file in list(files.items())[:1]:",
                "dataset sizes: only the frames file's size is checked",
            ),
            (
                "need, free = self.slots * sum(self.row_bytes.values()) + 2**20",
                'need, free = self.slots * self.row_bytes["frames"] + 2**20',
                "dataset free space: the check counts the frames only",
            ),
            (
                "need, free = self.slots * sum(self.row_bytes.values()) + 2**20",
                'need, free = self.slots * (sum(self.row_bytes.values()) - self.row_bytes["ep_start"]) + 2**20',
                "dataset free space: the check leaves out the episode starts",
            ),
        ]
    ],
    # ------------------------------------------------------------ Minari image layout and the frame env
    *[
        M(path, o, r, w, (FORMATS,))
        for path, o, r, w in [
            (
                "runners/data/formats/minari.py",
                "if shape[2] == 3:",
                "if shape[0] % 3 != 0:",
                "Minari layout: a recorded height divisible by 3 makes a frame stack",
            ),
            (
                "runners/data/formats/minari.py",
                "_layout(_recorded_space(meta, meta_file, entry), meta_file)",
                "_layout(_recorded_space(meta, meta_file, entry) if _is_jpeg(obs) else "
                '{"type": "Box", "shape": list(obs.shape[1:])}, meta_file)',
                "Minari layout: guessed from the arrays' shape, not the recorded space",
            ),
            (
                "runners/data/formats/minari.py",
                "if tuple(obs.shape[1:]) != record:",
                "if False:",
                "Minari layout: arrays of another shape than the recorded space are read",
            ),
            (
                "runners/data/formats/minari.py",
                'return "chw", None, tuple(shape)',
                'return "hwc", 3, tuple(shape)',
                "Minari layout: a recorded frame-stack space read as HWC images",
            ),
            (
                "runners/data/formats/minari.py",
                "observations=frames.numpy().transpose(0, 2, 3, 1),",
                "observations=frames.numpy().transpose(0, 3, 2, 1),",
                "Minari export: frames written transposed (W, H, 3)",
            ),
            (
                "envs/frame_env.py",
                "return np.ascontiguousarray(observation.transpose(1, 2, 0))",
                "return np.ascontiguousarray(observation.transpose(2, 1, 0))",
                "frame env: observations transposed (W, H, 3)",
            ),
            (
                "envs/frame_env.py",
                "self.observation_space = gym.spaces.Box(0, 255, (h, w, 3), np.uint8)",
                "self.observation_space = gym.spaces.Box(0, 255, (w, h, 3), np.uint8)",
                "frame env: observation space (W, H, 3)",
            ),
        ]
    ],
    # ------------------------------------------------------------ offline learners' config keys reach the learner
    *[
        M(path, o, r, w, ("tests/test_offline_agents.py",))
        for path, o, r, w in [
            (
                "agents/td3bc.py",
                'options = DrQV2.options + ("bc_alpha",)',
                "options = DrQV2.options",
                "config keys: bc_alpha never reaches TD3+BC",
            ),
            *[
                (
                    "agents/cql.py",
                    'options = DrQV2.options + ("cql_alpha", "cql_temp", "cql_samples")',
                    "options = DrQV2.options + " + repr(tuple(k for k in CQL_KEYS if k != key)),
                    f"config keys: {key} never reaches CQL",
                )
                for key in CQL_KEYS
            ],
            *[
                (
                    "agents/iql.py",
                    'options = ("iql_expectile", "iql_beta", "iql_max_weight")',
                    f"options = {tuple(k for k in ('iql_expectile', 'iql_beta', 'iql_max_weight') if k != key)}",
                    f"config keys: {key} never reaches IQL",
                )
                for key in ("iql_expectile", "iql_beta", "iql_max_weight")
            ],
            (
                "agents/drqv2.py",
                'options: tuple[str, ...] = ("std_schedule", "std_clip")',
                'options: tuple[str, ...] = ("std_schedule",)',
                "config keys: std_clip never reaches the DrQ-v2 family",
            ),
            (
                "agents/drqv2.py",
                'options: tuple[str, ...] = ("std_schedule", "std_clip")',
                'options: tuple[str, ...] = ("std_clip",)',
                "config keys: std_schedule never reaches the DrQ-v2 family",
            ),
            (
                "runners/core/run.py",
                "kwargs.update({key: getattr(cfg, key) for key in cls.options})",
                "pass",
                "config keys: no learner option reaches the learner",
            ),
        ]
    ],
    # ------------------------------------------------------------ what a newcomer meets: the CLI, offline quick runs
    *[
        M(path, o, r, w, ("tests/test_cli.py",))
        for path, o, r, w in [
            (
                "runners/cli.py",
                "namespace, extras = super().parse_known_intermixed_args(args, namespace)",
                "namespace, extras = super().parse_known_args(args, namespace)",
                "cli: a subcommand stops taking key=value items after its first option",
            ),
            (
                "runners/cli.py",
                "        if extras:\n",
                "        if False:\n",
                "cli: an unknown option shows the top-level usage, not the subcommand's",
            ),
            (
                "runners/data/cli.py",
                "from taco_rl.runners.core.config import ENV_KEYS, Config, ConfigError\n",
                "from taco_rl.runners.core.config import ENV_KEYS, Config, ConfigError\n"
                "from taco_rl.runners.data.datasets import dataset_info  # noqa: F401\n",
                "cli: building the parser imports torch (taco data's dataset module)",
            ),
            (
                "runners/cli.py",
                "    from taco_rl.runners.core.rundir import RunInterrupted, sigterm_as_interrupt\n",
                "    from taco_rl.runners.core.guard import NonFiniteError  # noqa: F401\n"
                "    from taco_rl.runners.core.rundir import RunInterrupted, sigterm_as_interrupt\n",
                "cli: the error classes of torch modules are imported before the settings are checked",
            ),
        ]
    ],
    *[
        M(path, o, r, w, ("tests/test_offline.py", "tests/test_cli.py"))
        for path, o, r, w in [
            (
                "runners/core/config.py",
                "        named.update(OFFLINE_NAMED_PRESETS.get(preset, {}))\n",
                "",
                "offline preset=quick keeps the paper budget (550k updates)",
            ),
            (
                "runners/core/config.py",
                'user["task"] = recorded',
                "pass",
                "offline: the dataset's task is ignored when task= is not given",
            ),
            (
                "runners/core/config.py",
                'elif str(user["task"]) != recorded:',
                "elif False:",
                "offline: a task= other than the dataset's passes the settings check",
            ),
            (
                "runners/offline/train.py",
                'if self.info.get("task") not in (None, cfg.task):',
                "if False:",
                "offline: a run opens a dataset of another task",
            ),
            (
                "runners/data/datasets.py",
                'what = "a file, not a dataset directory" if path.exists() else "no such dataset directory"',
                'what = "no such dataset directory"',
                "offline: dataset= naming a file says there is no such directory",
            ),
        ]
    ],
    M(
        "runners/core/run.py",
        "write_video(path, video, fps)",
        "write_video(path, video, 30)",
        "eval videos at 30 fps whatever the env's rate",
        ("tests/test_eval_video.py",),
    ),
    M(
        "envs/dmc.py",
        "absl_logger.addFilter(_not_settotalmass)",
        "pass",
        "building cheetah logs the settotalmass warning",
        ("tests/test_envs.py",),
    ),
    M(
        "runners/data/convert.py",
        "task = task or plan.task or _guess_task(path)",
        "task = task or _guess_task(path)",
        "minari import ignores the task our env spec records",
        (FORMATS,),
    ),
    *[
        M("runners/study/sweep.py", o, r, w, ("tests/test_sweep.py",))
        for o, r, w in [
            (
                "                    show(text)\n",
                "                    pass\n",
                "sweep: a local run's evaluations are not shown",
            ),
            (
                'lines, pending = [*lines, pending], b""',
                "pass",
                "sweep: a run's last line without a newline is never shown",
            ),
        ]
    ],
]


def scratch_copy(dest: Path) -> None:
    """The tree as git sees it (tracked and untracked-but-not-ignored files), without caches."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def check_originals(mutants: list[Mutant]) -> list[str]:
    problems = []
    for m in mutants:
        n = (ROOT / m.path).read_text().count(m.original)
        if n != 1:
            where = "not found" if n == 0 else f"found {n} times"
            problems.append(f"{m.path}: original text {where} for mutant '{m.what}': {m.original!r}")
    return problems


def run_tests(tree: Path, tests: list[str], timeout: float) -> tuple[bool, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
    }
    cmd = [sys.executable, "-m", "pytest", "-m", "not slow", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "timed out"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    failed = next((ln for ln in lines if ln.startswith("FAILED") or ln.startswith("ERROR")), lines[-1] if lines else "")
    return proc.returncode == 0, failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="run the whole non-slow suite against each mutant")
    ap.add_argument(
        "--tests",
        nargs="+",
        help=f"test files to run for every mutant (default: each mutant's own, else {' '.join(LEARNER_TESTS)})",
    )
    ap.add_argument(
        "-k", dest="match", help="only mutants whose file or description contains this text (several: separated by '|')"
    )
    ap.add_argument("-j", "--jobs", type=int, default=1, help="mutants tested at once (one scratch tree each)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per test run (a timeout counts as killed)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = ap.parse_args(argv)
    wanted = [w.strip().lower() for w in (args.match or "").split("|") if w.strip()]
    mutants = [m for m in MUTANTS if not wanted or any(w in (m.path + " " + m.what).lower() for w in wanted)]
    if args.list:
        for i, m in enumerate(mutants):
            print(f"{i:3d} {m.path}: {m.what}")
        return 0
    problems = check_originals(mutants)
    if problems:
        print("mutants.py: these mutations can no longer be planted (the code moved; update MUTANTS):", file=sys.stderr)
        print("\n".join("  " + p for p in problems), file=sys.stderr)
        return 2

    def tests_for(m: Mutant) -> list[str]:
        # listing a mutant's own tests and the learner tests first makes -x stop early; pytest drops
        # the repeats in tests/
        if args.tests:
            return args.tests
        own = list(m.tests) or LEARNER_TESTS
        return own + [t for t in LEARNER_TESTS + ["tests"] if t not in own] if args.full else own

    tests = list(dict.fromkeys(t for m in mutants for t in tests_for(m)))  # the unmutated tree passes them all
    jobs = max(1, min(args.jobs, len(mutants)))
    with tempfile.TemporaryDirectory(prefix="taco-mutants-") as tmp:
        trees = [Path(tmp) / f"tree{i}" for i in range(jobs)]
        for t in trees:
            scratch_copy(t)
        t0 = time.time()
        ok, detail = run_tests(trees[0], tests, args.timeout)
        if not ok:
            print(f"mutants.py: the unmutated tree fails its tests ({detail}); fix that first", file=sys.stderr)
            return 2
        print(f"unmutated tree passes {' '.join(tests)} ({time.time() - t0:.0f} s); planting {len(mutants)} mutants")
        free = list(trees)

        def attempt(m: Mutant) -> tuple[Mutant, bool, str, float]:
            tree = free.pop()
            target = tree / m.path
            source = target.read_text()
            try:
                target.write_text(source.replace(m.original, m.replacement, 1))
                start = time.time()
                passed, detail = run_tests(tree, tests_for(m), args.timeout)
                return m, not passed, detail, time.time() - start
            finally:
                target.write_text(source)
                free.append(tree)

        survivors = []
        with ThreadPoolExecutor(jobs) as pool:
            for i, (m, killed, detail, secs) in enumerate(pool.map(attempt, mutants)):
                status = "killed  " if killed else "SURVIVED"
                print(
                    f"[{i + 1:3d}/{len(mutants)}] {status} {secs:5.1f}s  {m.path}: {m.what}"
                    + (f"\n            by {detail}" if killed else ""),
                    flush=True,
                )
                if not killed:
                    survivors.append(m)
    print(f"\n{len(mutants) - len(survivors)} killed / {len(mutants)} total ({time.time() - t0:.0f} s)")
    for m in survivors:
        print(f"  survived: {m.path}: {m.what}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
