"""The PPO loop: rollout, advantages, then epochs of clipped updates of the policy and its value head.

One *step* (what ``training.max_steps`` counts and the log history records) is one rollout and its updates,
as in TRL's former PPOTrainer. A rollout holds ``batch_size x gradient_accumulation x num_mini_batches``
prompts; each mini-batch of ``batch_size x gradient_accumulation`` is one optimizer step.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ftsdk.plugin.jobs import TrainJob, TrainOutcome
from ftsdk.training.trainer import final_metrics, trainer_arguments
from ftsdk_plugins.objectives._rewards import RewardFunction
from ftsdk_plugins.objectives.ppo_advantages import gae, masked_mean, masked_whiten, token_rewards
from ftsdk_plugins.objectives.ppo_losses import policy_loss, value_loss
from ftsdk_plugins.objectives.ppo_rollout import Reference, Rollout, ValueHead, collect, score_tokens

if TYPE_CHECKING:
    from ftsdk_plugins.objectives.ppo import PpoConfig


#: the files of a PPO checkpoint besides the trainer state
POLICY_FILE = "policy_trainable.safetensors"
VALUE_HEAD_FILE = "value_head.safetensors"
STATE_FILE = "ppo_state.pt"


class PpoTrainer:
    """Trains ``job.model`` (the policy) with PPO against ``rewards``; reports to ``job.callbacks``."""

    def __init__(
        self, job: TrainJob, config: PpoConfig, rewards: Sequence[RewardFunction], weights: Sequence[float]
    ) -> None:
        from transformers import TrainingArguments, get_scheduler
        from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback, TrainerControl, TrainerState

        self.job, self.config, self.rewards, self.weights = job, config, rewards, weights
        t = job.training
        self.model = job.model
        for module in self.model.modules():  # dropout would make the policy ratio noisy
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        if t.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.reference = Reference(self.model)
        self.value_head = ValueHead(self.model.config.get_text_config().hidden_size).to(self.model.device)
        self.step_size = t.batch_size * t.gradient_accumulation
        self.rollout_size = self.step_size * config.num_mini_batches
        prompts = len(job.train_examples)
        self.max_steps = t.max_steps or math.ceil(t.epochs * prompts / self.rollout_size)
        updates = self.max_steps * config.ppo_epochs * config.num_mini_batches
        parameters = [p for p in self.model.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(parameters, lr=t.learning_rate, weight_decay=t.weight_decay)
        self.scheduler = get_scheduler(t.lr_scheduler, self.optimizer, num_warmup_steps=math.ceil(t.warmup_ratio
                                       * updates), num_training_steps=updates)
        self.args = TrainingArguments(**trainer_arguments(job))
        self.state = TrainerState(max_steps=self.max_steps, logging_steps=t.logging_steps)
        self.control = TrainerControl()
        self.callbacks = CallbackHandler([DefaultFlowCallback(), *job.callbacks], self.model, job.tokenizer,
                                         self.optimizer, self.scheduler)
        self.order = random.Random(t.seed)

    # -- the loop ---------------------------------------------------------------------------------

    def train(self) -> TrainOutcome:
        started = time.perf_counter()
        batches = self._batches()
        first = self._resume(batches) + 1 if self.job.resume_from else 1
        self.control = self.callbacks.on_train_begin(self.args, self.state, self.control)
        losses: list[float] = []
        for step in range(first, self.max_steps + 1):
            rollout = self._rollout(next(batches))
            metrics = self._update(rollout)
            losses.append(metrics["loss"])
            self.state.global_step = step
            self.state.epoch = step * self.rollout_size / len(self.job.train_examples)
            self.control = self.callbacks.on_step_end(self.args, self.state, self.control)
            if step == 1 or step % self.job.training.logging_steps == 0 or step == self.max_steps:
                self._log(metrics | {"learning_rate": self.scheduler.get_last_lr()[0]})
            if self._eval_due(step):
                self._log(self.evaluate())
            if self.job.training.save_steps and step % self.job.training.save_steps == 0:
                self._save(step)
            if self.control.should_training_stop:
                break
        if self.job.eval_examples and not self._eval_due(self.state.global_step):
            self._log(self.evaluate())
        self._log({"train_runtime": round(time.perf_counter() - started, 3),
                   "train_loss": sum(losses) / len(losses) if losses else 0.0})
        self.control = self.callbacks.on_train_end(self.args, self.state, self.control)
        history = list(self.state.log_history)
        return TrainOutcome(final_metrics(history), history)

    def evaluate(self) -> dict[str, float]:
        """Mean reward of completions sampled for the evaluation prompts."""
        examples = self.job.eval_examples or []
        scores = [self._rollout(examples[i : i + self.rollout_size]).scores
                  for i in range(0, len(examples), self.rollout_size)]
        return {"eval_reward": float(torch.cat(scores).mean())}

    # -- checkpoints ------------------------------------------------------------------------------

    def _save(self, step: int) -> None:
        """Write ``checkpoint-STEP`` into the work folder (trainable weights, value head, optimizer, scheduler,
        RNG and trainer state); the Trainer callbacks' ``on_save`` then seals and rotates it."""
        from safetensors.torch import save_file
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = self.job.work_dir / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        folder.mkdir(parents=True, exist_ok=True)
        trainable = {name: p.detach().contiguous() for name, p in self.model.named_parameters() if p.requires_grad}
        save_file(trainable, folder / POLICY_FILE)
        save_file({k: v.contiguous() for k, v in self.value_head.state_dict().items()}, folder / VALUE_HEAD_FILE)
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, folder / STATE_FILE)
        self.state.save_to_json(str(folder / "trainer_state.json"))
        self.control = self.callbacks.on_save(self.args, self.state, self.control)

    def _resume(self, batches: Iterator[list[dict[str, Any]]]) -> int:
        """Load ``job.resume_from`` and move the prompt order past its steps; return the step it ended."""
        from safetensors.torch import load_file
        from transformers.trainer_callback import TrainerState

        folder = self.job.resume_from
        assert folder is not None
        trainable = load_file(folder / POLICY_FILE)
        missing = {n for n, p in self.model.named_parameters() if p.requires_grad} - trainable.keys()
        if missing:
            raise ValueError(f"checkpoint {folder} lacks trained weights: {sorted(missing)[:3]}")
        with torch.no_grad():
            for name, parameter in self.model.named_parameters():
                if name in trainable:
                    parameter.copy_(trainable[name])
        self.value_head.load_state_dict(load_file(folder / VALUE_HEAD_FILE))
        saved = torch.load(folder / STATE_FILE, weights_only=True)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = TrainerState.load_from_json(str(folder / "trainer_state.json"))
        for _ in range(self.state.global_step):  # the same shuffled prompts the interrupted run would have taken
            next(batches)
        torch.set_rng_state(saved["torch_rng"])  # sampling and mini-batch order continue where they were
        return self.state.global_step

    # -- pieces -----------------------------------------------------------------------------------

    def _eval_due(self, step: int) -> bool:
        every = self.job.training.eval_steps
        return bool(self.job.eval_examples) and bool(every) and step % every == 0  # type: ignore[operator]

    def _batches(self) -> Iterator[list[dict[str, Any]]]:
        """Rollout-sized batches of prompts, reshuffled each pass over the data."""
        pool: list[dict[str, Any]] = []
        while True:
            while len(pool) < self.rollout_size:
                more = list(self.job.train_examples)
                self.order.shuffle(more)
                pool += more
            yield pool[: self.rollout_size]
            pool = pool[self.rollout_size :]

    def _rollout(self, examples: list[dict[str, Any]]) -> Rollout:
        c = self.config
        return collect(
            self.model, self.reference, self.value_head, self.job.tokenizer, examples, self.rewards, self.weights,
            max_new_tokens=c.max_new_tokens, temperature=c.temperature,
            max_prompt_tokens=self.job.training.max_length - c.max_new_tokens,
        )

    def _update(self, rollout: Rollout) -> dict[str, float]:
        """PPO epochs over shuffled mini-batches of the rollout; returns the step's averaged metrics."""
        c, t = self.config, self.job.training
        rewards, kl = token_rewards(rollout.scores, rollout.logprobs, rollout.ref_logprobs, rollout.mask, c.kl_coef)
        advantages, returns = gae(rewards, rollout.values, rollout.mask, c.gamma, c.lam)
        advantages = masked_whiten(advantages, rollout.mask)
        sums: dict[str, float] = defaultdict(float)
        self.model.train()
        for _ in range(c.ppo_epochs):
            order = torch.randperm(len(rollout))
            for start in range(0, len(rollout), self.step_size):
                for micro in order[start : start + self.step_size].split(t.batch_size):
                    parts = self._losses(rollout, micro, advantages, returns)
                    (parts.pop("total") / t.gradient_accumulation).backward()
                    for key, value in parts.items():
                        sums[key] += float(value) / t.gradient_accumulation
                if t.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(
                        [p for group in self.optimizer.param_groups for p in group["params"]], t.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
        updates = c.ppo_epochs * c.num_mini_batches
        metrics = {key: value / updates for key, value in sums.items()}
        sequence_kl = kl.sum(dim=1)
        return metrics | {
            "reward": float(rollout.scores.mean()),
            "reward_std": float(rollout.scores.std()) if len(rollout) > 1 else 0.0,
            "kl": float(sequence_kl.mean()),
            "non_score_reward": float(-c.kl_coef * sequence_kl.mean()),
            "completion_length": float(rollout.mask.sum(dim=1).mean()),
        }

    def _losses(
        self, rollout: Rollout, rows: torch.Tensor, advantages: torch.Tensor, returns: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        mask = rollout.mask[rows]
        scored = score_tokens(self.model, self.value_head, rollout.input_ids[rows], rollout.attention_mask[rows],
                              rollout.prompt_length, self.config.temperature)
        assert scored.values is not None
        policy = policy_loss(scored.logprobs, rollout.logprobs[rows], advantages[rows], mask, self.config.clip_range)
        value = value_loss(scored.values, rollout.values[rows], returns[rows], mask, self.config.value_clip_range)
        total = policy.loss + self.config.value_coef * value.loss
        return {
            "total": total,
            "loss": total.detach(),
            "policy_loss": policy.loss.detach(),
            "value_loss": value.loss.detach(),
            "clip_fraction": policy.clip_fraction,
            "value_clip_fraction": value.clip_fraction,
            "approx_kl": policy.approx_kl.detach(),
            "entropy": masked_mean(scored.entropy, mask).detach(),
        }

    def _log(self, values: dict[str, float]) -> None:
        entry = {key: round(float(v), 6) for key, v in values.items()}
        entry |= {"epoch": round(self.state.epoch or 0.0, 4), "step": self.state.global_step}
        self.state.log_history.append(entry)
        self.control = self.callbacks.on_log(self.args, self.state, self.control, logs=entry)
