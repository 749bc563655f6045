"""Avalanche's Weights & Biases logger, fixed for current wandb (0.31) and for its steps."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from avalanche.evaluation.metric_results import AlternativeValues, TensorImage
from avalanche.logging import WandBLogger as _AvalancheWandBLogger
from matplotlib.figure import Figure
from PIL.Image import Image
from torch import Tensor

if TYPE_CHECKING:
    from avalanche.evaluation.metric_results import MetricValue
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["WandBLogger"]


def _generate_run_id(wandb_module: Any) -> str:
    """A new W&B run id from wandb's own generator, wherever this wandb keeps it."""
    try:
        from wandb.sdk.lib.runid import generate_id
    except ImportError:  # older wandb: the generator was wandb.util.generate_id
        legacy_generate_id = getattr(getattr(wandb_module, "util", None), "generate_id", None)
        if legacy_generate_id is None:
            raise RuntimeError(
                "Cannot find wandb's run-id generator (neither wandb.sdk.lib.runid.generate_id "
                "nor wandb.util.generate_id); pass params={'id': ...} or set WANDB_RUN_ID"
            ) from None
        return legacy_generate_id()
    return generate_id()


def _custom_chart_type(wandb_module: Any) -> type | None:
    """wandb's ``CustomChart`` class: ``wandb.plot`` (>= 0.19) or ``wandb.viz`` (older)."""
    for owner in ("plot", "viz"):
        chart = getattr(getattr(wandb_module, owner, None), "CustomChart", None)
        if isinstance(chart, type):
            return chart
    return None


class WandBLogger(_AvalancheWandBLogger):
    """Avalanche 0.6.0's ``WandBLogger`` for wandb 0.31, with every metric value kept.

    A drop-in replacement for :class:`avalanche.logging.WandBLogger` (same
    constructor, same metric names, same value conversions, checkpoints as
    artifacts when ``log_artifacts``). It opens the run at construction, as
    Avalanche's does; :meth:`close` finishes it. wandb's module is never modified.
    What differs:

    * **wandb 0.31.** The run id comes from ``wandb.sdk.lib.runid.generate_id``
      (Avalanche calls ``wandb.util.generate_id``, removed from wandb), and custom
      charts are ``wandb.plot.CustomChart`` (Avalanche asks for ``wandb.viz``,
      which wandb no longer has); where only the old names exist, they are used.
    * **Steps.** Avalanche logs each value with ``step=x_plot``, where Avalanche
      0.6.0 gives every metric, training and evaluation alike,
      ``x_plot = strategy.clock.train_iterations``. wandb keeps one row per step,
      so (1) two values of one metric at the same ``x_plot`` keep only the last:
      in a normal loop with periodic evaluation, the evaluation at the end of an
      experience and the one before the next experience share ``x_plot`` and
      the first is silently overwritten; (2) a value whose ``x_plot`` is below
      the run's current step is dropped with a warning ("Tried to log to step
      ..."): this happens when a second strategy (a fresh clock) logs to the
      same run, or when other ``wandb.log`` calls without a step push the run's
      step past ``train_iterations``. Here no step is passed: wandb numbers
      the rows itself (``_step``, always increasing), each row
      also holds the value's ``x_plot`` under :attr:`x_plot_key`, and
      ``define_metric(name, step_metric=x_plot_key)`` makes ``x_plot`` the
      x-axis of every metric this logger writes (and only of those). The values
      one callback publishes with the same ``x_plot`` share one row. Nothing is
      dropped or overwritten, and charts read as Avalanche's did.
    * **No duplicates.** Avalanche's ``after_training_exp`` logs again the values
      the evaluation plugin has just logged (harmless with a fixed step, one
      extra row per value here); this one logs only ``TrainingExperience``.
    * **Own run.** Metric values go to the run this logger opened (``self.run``),
      not to whichever run is ``wandb.run`` (checkpoint artifacts still go
      through Avalanche's code, to ``wandb.run``).

    Args:
        project_name: W&B project.
        run_name: W&B run name (display name).
        log_artifacts: log model weights as W&B artifacts (needs Avalanche's
            ``WeightCheckpoint`` metric in the evaluation plugin).
        path: local folder for those checkpoints.
        uri: reference to external storage (S3, GCS) for the checkpoints.
        sync_tfboard: sync TensorBoard logs to W&B.
        save_code: save the main script with the run.
        config: hyper-parameters recorded as the run's config.
        dir: folder for W&B's local files (``<dir>/wandb/...``); ``None`` leaves
            it to wandb (``WANDB_DIR``, else the working directory).
        params: more keyword arguments of ``wandb.init`` (they override the above).

    Attributes:
        run: the open ``wandb`` run, ``None`` once :meth:`close` has finished it.

    Example:
        Offline (``WANDB_MODE=offline``), the run is written under
        ``<dir>/wandb/offline-run-*`` for a later ``wandb sync``::

            logger = WandBLogger(project_name="m2kd", run_name="digits", dir="logs",
                                 config={"mem_size": 2000})
            evaluator = EvaluationPlugin(accuracy_metrics(stream=True), loggers=[logger])
            ...  # train and evaluate
            logger.close()
    """

    #: Name of the field holding each value's ``x_plot``: the x-axis of the charts.
    x_plot_key: str = "x_plot"

    def __init__(
        self,
        project_name: str = "Avalanche",
        run_name: str = "Test",
        log_artifacts: bool = False,
        path: str | Path = "Checkpoints",
        uri: str | None = None,
        sync_tfboard: bool = False,
        save_code: bool = True,
        config: object | None = None,
        dir: str | Path | None = None,
        params: dict | None = None,
    ) -> None:
        self.run: Any = None
        self._defined: set[str] = set()
        self._rows: list[tuple[Any, dict[str, Any]]] | None = None
        super().__init__(
            project_name=project_name,
            run_name=run_name,
            log_artifacts=log_artifacts,
            path=path,
            uri=uri,
            sync_tfboard=sync_tfboard,
            save_code=save_code,
            config=config,
            dir=None if dir is None else str(dir),
            params=params,
        )

    def before_run(self) -> None:
        """Opens the W&B run (called at construction and when unpickled)."""
        if self.wandb is None:
            self.import_wandb()
        if self.init_kwargs is None:
            self.init_kwargs: dict[str, Any] = {}  # set by Avalanche's __init__
        run_id = self.init_kwargs.get("id") or os.environ.get("WANDB_RUN_ID")
        self.init_kwargs["id"] = run_id or _generate_run_id(self.wandb)
        self.run = self.wandb.init(**self.init_kwargs)
        self._defined = set()
        label = getattr(self.run, "_label", None)  # W&B's integration telemetry
        if callable(label):
            label(repo="Avalanche")

    def close(self) -> None:
        """Finishes the run; the next ``WandBLogger`` starts a new one. Safe to call twice.

        wandb writes the offline ``.wandb`` file in its service process: it can
        still be growing for a moment after this returns.
        """
        run, self.run = self.run, None
        self._rows = None
        if run is not None:
            run.finish()

    def log_metrics(self, metric_values: list[MetricValue]) -> None:
        """Logs the values of one callback, one row per ``x_plot`` (see the class)."""
        self._rows = []
        try:
            super().log_metrics(metric_values)
            rows, self._rows = self._rows, None
            for x_plot, row in rows:
                self._log_row(row, x_plot)
        finally:
            self._rows = None

    def log_single_metric(self, name: str, value: Any, x_plot: Any) -> None:
        """Logs one value at ``x_plot`` (see the class for the step), as Avalanche converts it.

        Args:
            name: the metric's full name.
            value: a number, tensor (histogram), image, figure, custom chart or
                ``AlternativeValues``; other types are skipped, as in Avalanche.
            x_plot: the value's x position (Avalanche: the training iteration).
        """
        self.step = x_plot
        if name.startswith("WeightCheckpoint"):
            if self.log_artifacts:
                self._log_checkpoint(name, value, x_plot)
            return
        data = self._to_wandb(value)
        if data is None:
            return
        if self._rows is None:  # called directly, not from log_metrics
            self._log_row({name: data}, x_plot)
            return
        if self._rows and self._rows[-1][0] == x_plot and name not in self._rows[-1][1]:
            self._rows[-1][1][name] = data
        else:
            self._rows.append((x_plot, {name: data}))

    def after_training_exp(
        self,
        strategy: SupervisedTemplate,
        metric_values: list[MetricValue] | None = None,
        **kwargs: Any,
    ) -> None:
        """Logs ``TrainingExperience`` (the values were logged by ``log_metrics`` already)."""
        self._log_row({"TrainingExperience": self.exp_count}, self.step)
        self.exp_count += 1

    def _to_wandb(self, value: Any) -> Any:
        """The value as Avalanche's logger sends it to wandb, ``None`` if unsupported."""
        chart = _custom_chart_type(self.wandb)
        supported: tuple[type, ...] = (Image, Tensor, TensorImage, Figure, float, int)
        if chart is not None:
            supported += (chart,)
        if isinstance(value, AlternativeValues):
            value = value.best_supported_value(*supported)
        if not isinstance(value, supported):
            return None
        if isinstance(value, Image):
            return self.wandb.Image(value)
        if isinstance(value, Tensor):
            histogram = np.histogram(value.detach().cpu().reshape(-1).numpy())
            return self.wandb.Histogram(np_histogram=histogram)
        if isinstance(value, TensorImage):
            return self.wandb.Image(np.array(value))
        return value  # float, int, Figure, CustomChart

    def _log_row(self, row: dict[str, Any], x_plot: Any) -> None:
        """One history row: ``row`` plus ``x_plot``, at wandb's own next step."""
        if self.run is None:
            raise RuntimeError(
                "This WandBLogger is closed (close() finished its run); "
                "create a new WandBLogger to log to a new run"
            )
        for name in row:
            if name not in self._defined:
                if not self._defined:
                    self.run.define_metric(self.x_plot_key)
                    self._defined.add(self.x_plot_key)
                self.run.define_metric(name, step_metric=self.x_plot_key)
                self._defined.add(name)
        self.run.log({**row, self.x_plot_key: x_plot})

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("run", None)
        state["_rows"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("run", None)
        super().__setstate__(state)
