"""The run report's pictures (PNG, matplotlib's Agg canvas): per training phase, each loss term and
the learning rate over its steps; over the whole run, every dev evaluation with the phase
boundaries marked.

matplotlib is optional (the extra `report`): `draw` raises ImportError without it, and the report
goes on without pictures. Figures are built on `matplotlib.figure.Figure` with an Agg canvas, never
through pyplot, so drawing neither switches a caller's matplotlib backend nor keeps global state.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from distill_engine.report.rundata import RunData

DPI = 100
# a panel is drawn on a log scale when its positive values span this factor or more
LOG_SPAN = 100.0
# a series with more points than this also gets a moving average (the raw values drawn faint)
SMOOTH_ABOVE = 60
CONFUSION_PICTURE = "confusion.png"
# a confusion matrix with more classes than this is drawn without the counts in its cells
ANNOTATE_UP_TO = 12


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window // 2, values[0]), values, np.full(window - 1 - window // 2, values[-1])])
    return np.convolve(padded, kernel, mode="valid")


def _panel(ax, name: str, steps: list[int], values: list[float], every: int | None) -> None:
    from matplotlib.ticker import MaxNLocator

    x, y = np.asarray(steps), np.asarray(values, np.float64)
    is_lr = name == "lr"
    color = "tab:green" if is_lr else "tab:red" if name == "total" else "tab:blue"
    label = f"logged every {every} steps" if every and every > 1 else "every step"
    if len(x) > SMOOTH_ABOVE and not is_lr:
        window = max(3, len(x) // 25)
        ax.plot(x, y, color=color, alpha=0.3, linewidth=0.8, label=label)
        ax.plot(x, _moving_average(y, window), color=color, linewidth=1.6,
                label=f"moving average of {window} records")
        ax.legend(fontsize=8, loc="best")
    else:
        ax.plot(x, y, color=color, linewidth=1.4, marker="." if len(x) <= 30 else None)
    positive = y[y > 0]
    if not is_lr and len(positive) == len(y) and len(y) and positive.max() / positive.min() >= LOG_SPAN:
        ax.set_yscale("log")
    ax.set_title("learning rate" if is_lr else "total (weighted sum)" if name == "total" else name, fontsize=10)
    ax.set_xlabel("step (in this phase)")
    ax.set_ylabel("learning rate" if is_lr else "loss" + (" (log scale)" if ax.get_yscale() == "log" else ""))
    if is_lr:  # from 0: warm-up, decay and a constant rate read alike
        ax.set_ylim(0, max(float(y.max()), 1e-12) * 1.08)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


def _logged_every(steps: list[int]) -> int | None:
    if len(steps) < 2:
        return None
    return int(np.median(np.diff(steps)))


def draw_phase(run: RunData, phase: str, path: Path) -> bool:
    """One figure for a training phase: a panel per loss term (total too when there are several
    terms) and the learning rate. False when the phase logged no training step."""
    series = run.train_series(phase)
    if not series:
        return False
    terms = [k for k in series if k not in ("total", "lr")]
    names = terms + (["total"] if "total" in series and len(terms) != 1 else []) + (["lr"] if "lr" in series else [])
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure = _figure(4.2 * columns, 3.0 * rows + 0.5)
    info = run.phase(phase)
    done = f"{info.steps} steps" if info.status == "finished" else f"{info.steps} steps logged, {info.status}"
    figure.suptitle(f"Phase {phase} ({info.kind}): training losses and learning rate, {done}", fontsize=11)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        steps, values = series[name]
        _panel(ax, name, steps, values, _logged_every(steps))
    for ax in axes[len(names):]:
        ax.set_visible(False)
    figure.savefig(path, dpi=DPI)
    return True


def draw_dev(run: RunData, path: Path) -> bool:
    """Every dev evaluation over the run's global step, a line per phase and metric, the phase
    boundaries dashed; evaluate phases as stars. False when the run evaluated nothing."""
    finals = [(p, p.dev) for p in run.phases if p.kind == "evaluate" and p.dev]
    if not run.evaluations and not finals:
        return False
    figure = _figure(9.0, 4.2)
    ax = figure.subplots()
    # the metrics; their details ("<metric>/<detail>", a token task's per entity type) would crowd
    # the legend out of the figure
    metrics = sorted(m for m in {m for e in run.evaluations for m in e.metrics} | {m for _, dev in finals for m in dev
                                                                                 if not m.startswith("best_")}
                     if "/" not in m)
    styles = ["-", "--", ":", "-."]
    colors = iter(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                   "tab:gray", "tab:olive", "tab:cyan"] * 4)
    for phase in run.phases:
        evaluations = [e for e in run.evaluations if e.phase == phase.name]
        if not evaluations:
            continue
        color = next(colors)
        for k, metric in enumerate(metrics):
            points = [(e.global_step, e.metrics[metric]) for e in evaluations if metric in e.metrics]
            if points:
                x, y = zip(*points)
                ax.plot(x, y, linestyle=styles[k % len(styles)], marker="o", markersize=3.5, color=color,
                        label=f"{phase.name}: {metric}" if len(metrics) > 1 else phase.name)
    for phase, dev in finals:
        color = next(colors)
        for k, metric in enumerate(m for m in metrics if m in dev):
            ax.plot([phase.offset], [dev[metric]], marker="*", markersize=11, linestyle="none", color=color,
                    label=f"{phase.name} ({phase.target}): {metric}" if len(metrics) > 1 else
                    f"{phase.name} ({phase.target})")
    from matplotlib.ticker import MaxNLocator

    trained = [p for p in run.phases if p.status != "not run" and p.kind != "evaluate"]
    ax.set_xlim(0, max(max((p.offset + p.steps for p in run.phases), default=1), 1) * 1.02)
    for phase in trained[1:]:
        ax.axvline(phase.offset, color="0.5", linestyle="--", linewidth=0.8)
    top = ax.get_ylim()[1]
    for phase in trained:
        ax.annotate(phase.name, (phase.offset, top), xytext=(3, -12), textcoords="offset points", fontsize=8,
                    color="0.3")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Dev {', '.join(metrics)} at every evaluation (phase boundaries dashed)", fontsize=11)
    ax.set_xlabel("global step (the steps of all phases, in order)")
    ax.set_ylabel("dev " + (metrics[0] if len(metrics) == 1 else "metric"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="phase", title_fontsize=8)
    figure.savefig(path, dpi=DPI)
    return True


def draw_confusion(run: RunData, path: Path) -> bool:
    """A confusion matrix per evaluation a phase ended with (gold rows, predicted columns; each
    cell's colour its share of the gold row, so a model that answers one class shows one dark
    column); False when no phase recorded one."""
    evaluated = [p for p in run.phases if p.classes is not None]
    if not evaluated:
        return False
    columns = min(3, len(evaluated))
    rows = math.ceil(len(evaluated) / columns)
    k = max(len(p.classes.labels) for p in evaluated)
    side = min(2.2 + 0.45 * k, 9.0)
    figure = _figure(max(side * columns, 6.5), max(side * rows + 0.6, 3.5))  # one phase: still readable
    figure.suptitle("Dev confusion matrices (rows: gold class, columns: predicted; colour: share of the row)",
                    fontsize=11)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, phase in zip(axes, evaluated):
        counts = phase.classes.array
        totals = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, totals, out=np.zeros(counts.shape, np.float64), where=totals > 0)
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        labels = phase.classes.labels
        ticks = range(len(labels))
        ax.set_xticks(ticks, labels, rotation=45 if max(len(x) for x in labels) > 4 else 0, fontsize=8)
        ax.set_yticks(ticks, labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(f"{phase.name} ({phase.model})", fontsize=10)
        if len(labels) <= ANNOTATE_UP_TO:
            for i in ticks:
                for j in ticks:
                    ax.text(j, i, f"{counts[i, j]:,}", ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
    for ax in axes[len(evaluated):]:
        ax.set_visible(False)
    figure.savefig(path, dpi=DPI)
    return True


def draw(run: RunData, directory: Path) -> list[tuple[str, str]]:
    """Draw every picture into `directory`; returns (file name, caption) of each, in order.
    ImportError when matplotlib is not installed."""
    import matplotlib  # noqa: F401  (ImportError here: the report goes on without pictures)

    out = []
    for phase in run.phases:
        name = f"losses-{phase.name}.png"
        if phase.kind != "evaluate" and draw_phase(run, phase.name, directory / name):
            out.append((name, f"Phase {phase.name}: losses and learning rate"))
    if draw_dev(run, directory / "dev.png"):
        out.append(("dev.png", "Dev metrics over the run"))
    if draw_confusion(run, directory / CONFUSION_PICTURE):
        out.append((CONFUSION_PICTURE, "Confusion matrices"))
    return out
