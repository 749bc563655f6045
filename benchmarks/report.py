"""The report of the comparison harness: its records summarised over seeds, as
Markdown tables (per step, old and new classes, equal total memory, paired
differences) and figures (accuracy per step, accuracy against total memory).

    python -m benchmarks.compare report --out DIR   # writes DIR/results.{md,json,png}
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from benchmarks.methods import BYTE_KINDS, METHODS
from benchmarks.stats import paired_markdown

__all__ = [
    "load_records",
    "markdown",
    "mean_std",
    "memory_markdown",
    "plot",
    "plot_memory",
    "summarize",
    "with_defaults",
    "write_report",
]

#: The methods in the order of the tables and of the figures' colours.
ORDER = tuple(METHODS)


def mean_std(values: list[float]) -> str:
    """``mean ± std`` at three decimals (the value alone for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def with_defaults(record: dict[str, Any]) -> dict[str, Any]:
    """A record with the fields older records lack: Fashion-MNIST, fixed class order,
    no total memory, stored bytes from their snapshot and exemplar bytes."""
    r = dict(record)
    r.setdefault("kind", "headline")
    r.setdefault("data_set", "fmnist")
    r.setdefault("class_order", "fixed")
    r.setdefault("total_memory", None)
    if "stored_bytes" not in r and not r.get("over_budget"):
        r["stored_bytes"] = dict.fromkeys(BYTE_KINDS, 0)
        r["stored_bytes"].update(snapshots=r["snapshot_bytes"], exemplars=r["exemplar_bytes"])
        r["stored_total"] = r["snapshot_bytes"] + r["exemplar_bytes"]
    return r


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every run record under ``out/runs`` (older records completed by :func:`with_defaults`)."""
    return [
        with_defaults(json.loads(p.read_text())) for p in sorted((out / "runs").rglob("*.json"))
    ]


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group records by (kind, class order, stream, total memory, budget, variant) with
    means and stds over seeds; records of runs over budget are left out."""
    groups: dict[tuple, list[dict]] = {}
    for r in map(with_defaults, records):
        if r.get("over_budget"):
            continue
        key = (
            r["kind"], r["class_order"], r["stream"], r["total_memory"], r["budget"], r["variant"],
            r["data_set"],
        )
        groups.setdefault(key, []).append(r)
    rows = []
    for (kind, order, stream, total, budget, variant, data_set), rs in groups.items():
        rows.append(
            dict(
                kind=kind,
                data_set=data_set,
                class_order=order,
                stream=stream,
                total_memory=total,
                budget=budget,
                variant=variant,
                seeds=sorted(r["seed"] for r in rs),
                average_incremental_accuracy=[r["average_incremental_accuracy"] for r in rs],
                final_accuracy=[r["final_accuracy"] for r in rs],
                final_old_accuracy=[r["final_old_accuracy"] for r in rs],
                final_new_accuracy=[r["new_accuracy"][-1] for r in rs],
                final_forgetting=[r["forgetting"][-1] for r in rs],
                accuracy_per_step=[
                    statistics.mean(v) for v in zip(*(r["accuracy"] for r in rs), strict=False)
                ],
                old_accuracy_per_step=[
                    None if v[0] is None else statistics.mean(v)
                    for v in zip(*(r["old_accuracy"] for r in rs), strict=False)
                ],
                new_accuracy_per_step=[
                    statistics.mean(v) for v in zip(*(r["new_accuracy"] for r in rs), strict=False)
                ],
                wall_time_s=statistics.mean(r["wall_time_s"] for r in rs),
                snapshot_bytes=rs[0]["snapshot_bytes"],
                exemplar_bytes=rs[0]["exemplar_bytes"],
                stored_bytes=rs[0]["stored_bytes"],
                stored_total=max(r["stored_total"] for r in rs),
                model_bytes=rs[0]["model_bytes"],
            )
        )
    order = {m: i for i, m in enumerate(ORDER)}
    rows.sort(
        key=lambda r: (
            r["kind"], r["class_order"], r["stream"], r["total_memory"] or 0, r["budget"],
            order.get(r["variant"], 99), r["variant"],
        )
    )
    return rows


def other_bytes(row: dict[str, Any]) -> int:
    """Stored bytes that are neither snapshots/models nor replay exemplars."""
    return sum(row["stored_bytes"][k] for k in ("validation", "logits", "other"))


def markdown(rows: list[dict[str, Any]], records: list[dict[str, Any]] | None = None) -> str:
    """The Markdown tables of :func:`summarize`'s rows: one per (kind, class order,
    stream), old/new-class accuracy per step for the headline, and the total-memory
    tables (:func:`memory_markdown`) when there are ``kind="memory"`` runs."""
    lines: list[str] = []
    current = None
    for r in rows:
        if (r["kind"], r["class_order"], r["stream"]) != current:
            current = (r["kind"], r["class_order"], r["stream"])
            lines += [
                "",
                f"**{r['kind']}, stream {r['stream']}, {r['class_order']} class order** "
                "(mean ± std over the seeds run)",
                "",
                "| method | budget | seeds | avg. incr. acc. | final acc. | final old | final new "
                "| "
                "forgetting | wall s | snapshots KiB | exemplars KiB | other KiB | stored KiB |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
        lines.append(
            f"| {r['variant']} | {r['budget']} | {len(r['seeds'])} | "
            f"{mean_std(r['average_incremental_accuracy'])} | "
            f"{mean_std(r['final_accuracy'])} | {mean_std(r['final_old_accuracy'])} | "
            f"{mean_std(r['final_new_accuracy'])} | {mean_std(r['final_forgetting'])} | "
            f"{r['wall_time_s']:.0f} | {r['snapshot_bytes'] / 1024:.0f} | "
            f"{r['exemplar_bytes'] / 1024:.0f} | "
            f"{other_bytes(r) / 1024:.0f} | {r['stored_total'] / 1024:.0f} |"
        )
    def step_group(r: dict[str, Any]) -> tuple:
        # headline: one table per exemplar budget; memory: one per total, every method's
        # budget (what the total bought it) in it
        size = r["budget"] if r["kind"] == "headline" else r["total_memory"]
        return r["kind"], r["class_order"], r["stream"], size

    stepped: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r["kind"] in ("headline", "memory"):
            stepped.setdefault(step_group(r), []).append(r)
    for (kind, order, stream, amount), group in sorted(stepped.items()):
        size = f"{amount} exemplars" if kind == "headline" else f"{amount:,} bytes in all"
        steps = len(group[0]["new_accuracy_per_step"])
        lines += [
            "",
            f"**{kind}, stream {stream}, {order} class order, {size}: old / new-class "
            "accuracy after each step** (mean over the seeds run; new: the step's own "
            "classes, just learned)",
            "",
            "| method | " + " | ".join(f"step {t + 1}" for t in range(steps)) + " |",
            "|---|" + "---|" * steps,
        ]
        for r in group:
            cells = [f"{'–' if o is None else f'{o:.2f}'} / {n:.2f}"
                     for o, n in zip(r["old_accuracy_per_step"], r["new_accuracy_per_step"],
                                     strict=False)]
            lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    memory = memory_markdown(rows, records or [])
    return "\n".join(lines).strip() + "\n" + (("\n" + memory) if memory else "")


def memory_markdown(rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> str:
    """One table per (class order, stream) of the ``kind="memory"`` runs: a row per
    method, a column per total memory, cells ``final / avg. incr. (exemplars bought)``;
    ``over budget`` where the method's fixed bytes exceed the total."""
    memory = [r for r in rows if r["kind"] == "memory"]
    over = {
        (r["class_order"], r["stream"], r["total_memory"], r["variant"]): r["predicted_fixed_bytes"]
        for r in map(with_defaults, records)
        if r.get("over_budget")
    }
    keys = {(r["class_order"], r["stream"]) for r in memory} | {k[:2] for k in over}
    lines: list[str] = []
    order = {m: i for i, m in enumerate(ORDER)}
    for class_order_, stream in sorted(keys):
        totals = sorted(
            {
                r["total_memory"]
                for r in memory
                if (r["class_order"], r["stream"]) == (class_order_, stream)
            }
            | {k[2] for k in over if k[:2] == (class_order_, stream)}
        )
        methods = sorted(
            {
                r["variant"]
                for r in memory
                if (r["class_order"], r["stream"]) == (class_order_, stream)
            }
            | {k[3] for k in over if k[:2] == (class_order_, stream)},
            key=lambda m: order.get(m, 99),
        )
        cell = {(r["total_memory"], r["variant"]): r for r in memory
                if (r["class_order"], r["stream"]) == (class_order_, stream)}
        lines += [
            "",
            f"**equal total memory, stream {stream}, {class_order_} class order: final / average "
            "incremental accuracy (exemplars bought)** (mean ± std over the seeds run)",
            "",
            "| method | " + " | ".join(f"{t / 1024:.0f} KiB" for t in totals) + " |",
            "|---|" + "---|" * len(totals),
        ]
        for m in methods:
            cells = []
            for t in totals:
                r = cell.get((t, m))
                if r is not None:
                    cells.append(
                        f"{mean_std(r['final_accuracy'])} / "
                        f"{mean_std(r['average_incremental_accuracy'])}"
                        f" ({r['budget']})"
                    )
                elif (class_order_, stream, t, m) in over:
                    cells.append(
                        f"over budget ({over[(class_order_, stream, t, m)] / 1024:.0f} KiB fixed)"
                    )
                else:
                    cells.append("–")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines).strip() + "\n" if lines else ""


def method_style(name: str) -> dict[str, Any]:
    """One colour (and line style past ten) per method, the same in every figure."""
    if name not in ORDER:
        return {}
    i = ORDER.index(name)
    return dict(color=f"C{i % 10}", linestyle="-" if i < 10 else "--")


def plot(records: list[dict[str, Any]], rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy per step of every headline method (one panel per stream, class order
    and budget) and the accuracy matrix of M2KD's first seed on the longest stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["kind"] != "memory"]
    records = [
        r
        for r in map(with_defaults, records)
        if r["kind"] != "memory" and not r.get("over_budget")
    ]
    head = [r for r in rows if r["kind"] == "headline"] or rows
    panels = sorted({(r["class_order"], r["stream"], r["budget"]) for r in head})
    m2kd = [r for r in records if r["method"] == "m2kd" and r["kind"] == "headline"] or \
        [r for r in records if r["method"] == "m2kd"]
    n = len(panels) + (1 if m2kd else 0)
    cols = min(n, 4)
    fig, axes = plt.subplots(
        math.ceil(n / cols), cols, figsize=(4.2 * cols, 3.4 * math.ceil(n / cols)), squeeze=False
    )
    for ax, (order, stream, budget) in zip(axes.flat, panels, strict=False):
        for r in head:
            if (r["class_order"], r["stream"], r["budget"]) == (order, stream, budget):
                steps = range(1, len(r["accuracy_per_step"]) + 1)
                ax.plot(steps, r["accuracy_per_step"], marker="o", ms=3, label=r["variant"],
                        **method_style(r["variant"]))
        title = f"{stream}, {budget} exemplars" + ("" if order == "fixed" else f", {order} order")
        ax.set(title=title, xlabel="step", ylabel="accuracy (seen classes)", ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if m2kd:
        r = max(m2kd, key=lambda r: (len(r["matrix"]), r["budget"], -r["seed"]))
        ax = axes.flat[len(panels)]
        data = [[float("nan") if v is None else v for v in row] for row in r["matrix"]]
        im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis")
        ax.set(title=f"M2KD accuracy matrix ({r['stream']}, {r['budget']} ex., seed {r['seed']})",
               xlabel="experience evaluated", ylabel="after step")
        ax.title.set_fontsize(8)
        fig.colorbar(im, ax=ax)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_memory(rows: list[dict[str, Any]], path: Path) -> None:
    """Final and average incremental accuracy against total memory: one line per
    method, one panel per (class order, stream) and metric; error bars are the std
    over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    memory = [r for r in rows if r["kind"] == "memory"]
    panels = sorted({(r["class_order"], r["stream"]) for r in memory})
    metrics = (
        ("final_accuracy", "final accuracy"),
        ("average_incremental_accuracy", "avg. incremental accuracy"),
    )
    fig, axes = plt.subplots(len(panels), 2, figsize=(9.5, 3.6 * len(panels)), squeeze=False)
    for (order, stream), pair in zip(panels, axes, strict=False):
        group = [r for r in memory if (r["class_order"], r["stream"]) == (order, stream)]
        for ax, (key, label) in zip(pair, metrics, strict=False):
            variants = sorted(
                {r["variant"] for r in group},
                key=lambda v: (ORDER.index(v) if v in ORDER else 99, v),
            )
            for m in variants:
                line = sorted(
                    (r for r in group if r["variant"] == m), key=lambda r: r["total_memory"]
                )
                x = [r["total_memory"] / 1024 for r in line]
                y = [statistics.mean(r[key]) for r in line]
                err = [statistics.stdev(r[key]) if len(r[key]) > 1 else 0.0 for r in line]
                ax.errorbar(
                    x, y, yerr=err, marker="o", ms=4, capsize=2, label=m, **method_style(m)
                )
            ax.set(
                title=f"{stream}, {order} class order: {label}",
                xlabel="total memory (KiB)",
                ylabel=label,
            )
            ax.title.set_fontsize(9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compute_line(records: list[dict[str, Any]]) -> str:
    """What regenerating ``records`` costs: the runs trained and their wall times summed.

    Each run takes one core (``OMP_NUM_THREADS=1``), so ``--workers 2`` on two cores
    takes about half the sum. The times are as run, so a shared machine's load is in
    them. Over-budget records (nothing trained) are not counted.

    >>> compute_line([{"wall_time_s": 3600.0}, {"wall_time_s": 1800.0}, {"over_budget": True}])
    '2 runs, 1.50 h of wall time summed (one core each)'
    """
    trained = [r for r in records if not r.get("over_budget")]
    hours = sum(r["wall_time_s"] for r in trained) / 3600
    return f"{len(trained)} runs, {hours:.2f} h of wall time summed (one core each)"


def write_report(out: Path) -> list[Path]:
    """Write ``results.md`` and ``results.json`` from the records under ``out/runs``,
    ``results.png`` (per-step accuracy, when there are exemplar-count runs) and
    ``memory.png`` (accuracy against total memory, when there are ``--total-memory``
    runs); print the tables and return the files written.

    Raises:
        FileNotFoundError: there is no record under ``out/runs``.
    """
    records = load_records(out)
    if not records:
        raise FileNotFoundError(
            f"no run records under {out / 'runs'}; run `python -m benchmarks.compare run` first"
        )
    rows = summarize(records)
    text = markdown(rows, records)
    paired = paired_markdown([r for r in records if r["kind"] == "memory"])
    if paired:
        text += "\n**Paired by seed, at equal total memory**\n" + paired
    text += f"\n**Compute**: {compute_line(records)}.\n"
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    written = [out / "results.md", out / "results.json"]
    if any(r["kind"] != "memory" for r in rows):
        plot(records, rows, out / "results.png")
        written.append(out / "results.png")
    if any(r["kind"] == "memory" for r in rows):
        plot_memory(rows, out / "memory.png")
        written.append(out / "memory.png")
    print(text)
    return written
