"""The one trainer every model uses: it runs the gradient stages a model declares.

Per stage: AdamW or Adam, linear warm-up then linear decay, gradient clipping and
accumulation, a progress bar with loss and throughput, validation after every epoch,
early stopping on the stage's validation metric with the best weights restored at the
end of the stage, and checkpoints from which `resume` continues bit for bit. Settings can
differ per stage (`train.stages.<name>`).

Determinism: the sample order of an epoch comes from a generator seeded by (seed, stage,
epoch), not from the global RNG, so a resumed run replays the same batches; dropout draws
from the global torch RNG, whose state the checkpoints carry.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from convrec.config import TrainConfig
from convrec.data.errors import DataFormatError
from convrec.models.base import Batch, ConvRecModel, Stage, move_to
from convrec.training.checkpoint import load_weights, rng_state, save_atomic, set_rng_state
from convrec.training.distributed import DistContext

log = logging.getLogger("convrec.train")

Validate = Callable[[ConvRecModel], dict[str, float]]


@dataclass
class TrainState:
    """Where training is; saved in every checkpoint."""

    stage: int = 0
    epoch: int = 0
    step_in_epoch: int = 0  # batches of the current epoch already done
    optimizer_steps: int = 0  # in the current stage
    best_metric: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    stage_done: bool = False  # early stopping or max_steps ended the current stage
    epoch_first_step: int = 0  # index into step_losses where the current epoch began
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    step_losses: list[float] = field(default_factory=list)  # every optimizer step, all stages


class _StageLoss(nn.Module):
    """Makes a stage's loss the forward of a module, so DistributedDataParallel can wrap it."""

    def __init__(self, model: ConvRecModel, loss: Callable[[Batch], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.loss(batch)


def linear_schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


class Trainer:
    def __init__(
        self,
        model: ConvRecModel,
        config: TrainConfig,
        *,
        seed: int,
        checkpoint_dir: Path,
        validate: Validate,
        dist: DistContext | None = None,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.config = config
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.validate = validate
        self.dist = dist or DistContext()
        self.progress = progress and self.dist.is_main
        self.state = TrainState()
        self.device = self.dist.device(config.device)
        model.to(self.device)
        # What the model itself leaves trainable (e.g. not a frozen LM); stages that name
        # no parameters train exactly these.
        self._trainable_by_default = {id(p) for p in model.parameters() if p.requires_grad}

    # -- checkpoints ---------------------------------------------------------------------

    @property
    def last_path(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.checkpoint_dir / "best.pt"

    def _save(self, optimizer: Any = None, scheduler: Any = None) -> None:
        """Write last.pt; between stages there is no optimizer worth keeping."""
        if self.dist.is_main:
            checkpoint = {
                "model": self.model.state_dict(),
                "rng": rng_state(),
                "state": asdict(self.state),
            }
            if optimizer is not None:
                checkpoint["optimizer"] = optimizer.state_dict()
                checkpoint["scheduler"] = scheduler.state_dict()
            save_atomic(checkpoint, self.last_path)
        self.dist.barrier()

    def _restore(self) -> dict[str, Any] | None:
        if not self.last_path.exists():
            return None
        checkpoint = load_weights(self.model, self.last_path)  # onto the model's device
        try:
            self.state = TrainState(**checkpoint["state"])
            set_rng_state(checkpoint["rng"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataFormatError(
                self.last_path, f"not a complete training checkpoint ({type(e).__name__}: {e})"
            ) from None
        return checkpoint

    # -- the loop -----------------------------------------------------------------------

    def fit(self, resume: bool = False) -> TrainState:
        checkpoint = self._restore() if resume else None
        if resume and checkpoint is None:
            log.info("no checkpoint in %s: starting from scratch", self.checkpoint_dir)
        if checkpoint is None:
            self.model.fit()
        stages = self.model.stages()
        self._check_stage_names(stages)
        while not self.state.finished and self.state.stage < len(stages):
            self._run_stage(stages[self.state.stage], checkpoint)
            checkpoint = None
        if not self.state.finished:
            self.state.finished = True
            if stages:  # count-only models have nothing to checkpoint
                self._save()
        return self.state

    def _trainable(self, stage: Stage) -> list[nn.Parameter]:
        if stage.parameters is None:
            chosen = self._trainable_by_default
        else:
            chosen = {id(p) for p in stage.parameters()}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in chosen)
        return [p for p in self.model.parameters() if p.requires_grad]

    def _optimizer(
        self, params: list[nn.Parameter], config: TrainConfig, stage: Stage
    ) -> torch.optim.Optimizer:
        """One parameter group per learning-rate factor of the stage (in first-seen order,
        so a resumed stage rebuilds the same groups)."""
        kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        groups: dict[float, list[nn.Parameter]] = {}
        for p in params:
            scale = 1.0 if stage.lr_scale is None else float(stage.lr_scale(p))
            groups.setdefault(scale, []).append(p)
        return kind(
            [{"params": group, "lr": config.lr * scale} for scale, group in groups.items()],
            lr=config.lr,
            weight_decay=config.weight_decay,
        )

    def _batches(self, num_samples: int, epoch: int, size: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(
            (self.seed * 1_000_003 + self.state.stage * 10_007 + epoch) % (2**63)
        )
        order = torch.randperm(num_samples, generator=generator)
        batches = list(order.split(size))
        # Every process needs at least one sample of a batch; a smaller tail is dropped.
        return [b for b in batches if len(b) >= self.dist.world_size]

    def _check_stage_names(self, stages: list[Stage]) -> None:
        known = {s.name for s in stages} | set(self.model.optional_stages)
        unknown = sorted(set(self.config.stages) - known)
        if unknown:
            raise ValueError(
                f"train.stages.{unknown[0]}: the model has no stage {unknown[0]!r}; its stages "
                f"are {', '.join(s.name for s in stages) or 'none'}"
            )

    def _run_stage(self, stage: Stage, checkpoint: dict[str, Any] | None) -> None:
        config, state = self.config.for_stage(stage.name), self.state
        self.stage_config = config
        samples: Sequence[Any] = stage.samples()
        params = self._trainable(stage)
        optimizer = self._optimizer(params, config, stage)
        resuming_inside = checkpoint is not None and "optimizer" in checkpoint
        if stage.begin is not None and not resuming_inside:
            stage.begin()
        batches_per_epoch = len(self._batches(len(samples), 0, config.batch_size))
        steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
        total_steps = steps_per_epoch * config.epochs
        if config.max_steps is not None:
            total_steps = min(total_steps, config.max_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, linear_schedule(total_steps, round(config.warmup_ratio * total_steps))
        )
        if resuming_inside:
            try:
                optimizer.load_state_dict(checkpoint["optimizer"])
                scheduler.load_state_dict(checkpoint["scheduler"])
            except (KeyError, TypeError, ValueError) as e:
                raise DataFormatError(
                    self.last_path, f"its optimizer state does not fit stage {stage.name!r} ({e})"
                ) from None

        module: nn.Module = _StageLoss(self.model, stage.loss)
        if self.dist.enabled:
            module = DistributedDataParallel(
                module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        log.info(
            "stage %s: %d samples, %d steps/epoch, up to %d epochs, %d trainable parameters",
            stage.name,
            len(samples),
            steps_per_epoch,
            config.epochs,
            sum(p.numel() for p in params),
        )

        while not state.stage_done and state.epoch < config.epochs:
            logged = stage.epoch_begin(state.epoch) if stage.epoch_begin is not None else {}
            throughput = self._run_epoch(stage, samples, module, optimizer, scheduler, params)
            self._end_epoch(stage, optimizer, scheduler, throughput, logged)

        # Leave the stage with its best weights (selected on validation), then record
        # that the stage is over before the best-weights file goes.
        if self.best_path.exists():
            load_weights(self.model, self.best_path)
        self.state = TrainState(
            stage=state.stage + 1,
            history=state.history,
            step_losses=state.step_losses,
            epoch_first_step=len(state.step_losses),  # the next stage's losses start here
        )
        self._save()
        if self.dist.is_main:
            self.best_path.unlink(missing_ok=True)
        self.dist.barrier()

    def _out_of_steps(self) -> bool:
        limit = self.stage_config.max_steps
        return limit is not None and self.state.optimizer_steps >= limit

    def _run_epoch(
        self,
        stage: Stage,
        samples: Sequence[Any],
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        params: list[nn.Parameter],
    ) -> tuple[int, float]:
        """Train to the end of the epoch; returns (samples seen, seconds) of this call."""
        config, state, dist = self.stage_config, self.state, self.dist
        batches = self._batches(len(samples), state.epoch, config.batch_size)
        self.model.train()
        bar = tqdm(
            total=len(batches),
            initial=state.step_in_epoch,
            disable=not self.progress,
            desc=f"{stage.name} epoch {state.epoch + 1}/{config.epochs}",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
        )
        started, seen, loss_sum = time.perf_counter(), 0, 0.0
        accumulated = torch.zeros((), device=self.device)
        for done, index in enumerate(range(state.step_in_epoch, len(batches)), start=1):
            batch_ids = batches[index]
            shard = batch_ids[dist.rank :: dist.world_size].tolist()
            # The optimizer step's samples: this micro-batch's accumulation group.
            group_start = index - index % config.grad_accum
            group = batches[group_start : group_start + config.grad_accum]
            group_size = sum(len(b) for b in group)
            last_micro = index + 1 == group_start + len(group)
            per_sample = module(move_to(stage.collate([samples[i] for i in shard]), self.device))
            if per_sample.dim() != 1:
                raise ValueError(
                    f"stage {stage.name!r}: loss must return per-sample losses [B], "
                    f"got shape {tuple(per_sample.shape)}"
                )
            # Sum over this shard, scaled so that the gradient averaged over processes and
            # accumulated over micro-batches is the mean over the step's samples.
            loss = per_sample.sum() * dist.world_size / group_size
            if dist.enabled and not last_micro:
                with module.no_sync():  # type: ignore[operator]
                    loss.backward()
            else:
                loss.backward()
            batch_loss_sum = dist.sum(per_sample.detach().sum())
            accumulated += batch_loss_sum
            state.step_in_epoch = index + 1
            if last_micro:
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.optimizer_steps += 1
                state.step_losses.append(accumulated.item() / group_size)
                accumulated = torch.zeros((), device=self.device)
                if self._out_of_steps():
                    break
                if config.checkpoint_every and state.optimizer_steps % config.checkpoint_every == 0:
                    self._save(optimizer, scheduler)
            seen += len(batch_ids)
            loss_sum += batch_loss_sum.item() / len(batch_ids)
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(
                loss=f"{loss_sum / done:.4f}",
                samples_per_s=f"{seen / elapsed:.0f}",
            )
            bar.update(1)
        bar.close()
        return seen, time.perf_counter() - started

    def _end_epoch(
        self,
        stage: Stage,
        optimizer: Any,
        scheduler: Any,
        throughput: tuple[int, float],
        logged: dict[str, float],
    ) -> None:
        """Validate, keep the best weights, decide whether to stop, checkpoint."""
        state, config = self.state, self.stage_config
        validate = stage.validate or (lambda: self.validate(self.model))
        metrics = validate() if self.dist.is_main else {}
        metrics = self.dist.broadcast(metrics)
        if stage.select_metric not in metrics:
            raise KeyError(
                f"stage {stage.name!r} selects on {stage.select_metric!r}, but validation "
                f"returned {sorted(metrics)}"
            )
        value = metrics[stage.select_metric]
        # best_metric is kept as "higher is better"; a loss is stored negated.
        signed = value if stage.higher_is_better else -value
        improved = signed > state.best_metric
        if improved:
            state.best_metric, state.best_epoch, state.bad_epochs = signed, state.epoch, 0
            if self.dist.is_main:
                save_atomic({"model": self.model.state_dict()}, self.best_path)
        else:
            state.bad_epochs += 1
        losses = state.step_losses[state.epoch_first_step :]
        seen, seconds = throughput
        row = {
            "stage": stage.name,
            "epoch": state.epoch + 1,
            "optimizer_steps": state.optimizer_steps,
            "train_loss": sum(losses) / len(losses) if losses else float("nan"),
            "lr": scheduler.get_last_lr()[0],
            "train_seconds": round(seconds, 2),
            "samples_per_s": round(seen / seconds, 2) if seconds > 0 else None,
            **logged,
            **{f"valid/{k}": v for k, v in metrics.items()},
            "best": improved,
        }
        state.history.append(row)
        log.info(
            "stage %s epoch %d: train loss %.4f, valid %s %.4f%s",
            stage.name,
            state.epoch + 1,
            row["train_loss"],
            stage.select_metric,
            value,
            " (best)" if improved else "",
        )
        state.epoch += 1
        state.step_in_epoch = 0
        state.epoch_first_step = len(state.step_losses)
        state.stage_done = state.bad_epochs >= config.patience or self._out_of_steps()
        self._save(optimizer, scheduler)
