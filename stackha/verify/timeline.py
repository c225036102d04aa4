"""The PNG timeline of one scenario run (matplotlib, Agg backend: no display needed).

One row per probe log: acknowledged operations as green ticks, failed ones as red crosses, the
longest gap shaded; vertical lines for the fault's events (injection, power-on/heal, recovery
start, all units active).  The x axis is seconds from the fault.
"""

from __future__ import annotations

from pathlib import Path

from stackha.verify import check

ROWS = (("mysql", "mysql.jsonl", "MySQL INSERT via VIP"), ("amqp", "amqp-publish.jsonl", "AMQP publish+confirm"),
        ("amqp-consume", "amqp-consume.jsonl", "AMQP consume"), ("keystone", "keystone.jsonl", "Keystone token"))


def plot_timeline(report, logs_dir: Path, png: Path) -> bool:
    """Draw ``report`` (a :class:`~stackha.verify.scenarios.RunReport`) with the probe logs saved
    in ``logs_dir`` into ``png``.  Returns False when there is nothing to draw (no log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for key, fname, label in ROWS:
        path = logs_dir / fname
        if path.exists():
            rows.append((key, label, check.operations(check.parse_jsonl(path.read_bytes())[0])))
    if not rows:
        return False
    t0 = report.extra.get("t_fault") or min((r["start"] for _, _, ops in rows for r in ops), default=0.0)
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.9 * len(rows)), dpi=100)
    for i, (key, label, ops) in enumerate(rows):
        y = len(rows) - i
        ok = [r["end"] - t0 for r in ops if r.get("ok")]
        bad = [r["start"] - t0 for r in ops if not r.get("ok")]
        ax.scatter(ok, [y] * len(ok), marker="|", s=80, color="tab:green", linewidths=0.8)
        if bad:
            ax.scatter(bad, [y] * len(bad), marker="x", s=18, color="tab:red", linewidths=0.8)
        res = report.probes.get(key)
        if res and res.get("gap_start") is not None and res.get("gap_end") is not None:
            ax.axvspan(res["gap_start"] - t0, res["gap_end"] - t0, ymin=(y - 0.4) / (len(rows) + 1),
                       ymax=(y + 0.4) / (len(rows) + 1), color="tab:orange", alpha=0.35)
            ax.text(res["gap_end"] - t0, y + 0.25, f" gap {res['longest_gap_ms']:.0f} ms, lost {res['lost']}",
                    fontsize=8, va="bottom")
    colors = {"power on": "tab:blue", "heal": "tab:blue", "stackha recovery starts": "tab:purple",
              "all units active": "tab:green"}
    seen = set()
    for ev in report.events:
        what = ev["what"]
        color = colors.get(what, "tab:red")
        label = what if what not in seen else None
        seen.add(what)
        ax.axvline(ev["t"] - t0, color=color, linestyle="--" if color != "tab:red" else "-", linewidth=1, label=label)
    ax.set_yticks(range(len(rows), 0, -1))
    ax.set_yticklabels([label for _, label, _ in rows])
    ax.set_ylim(0.3, len(rows) + 0.9)
    ax.set_xlabel("seconds from the fault")
    rec = f", recovery {report.recovery_s:.1f} s" if report.recovery_s is not None else ", not recovered"
    ax.set_title(f"{report.scenario} run {report.run} on {report.lab} (tuning {report.tuning}): "
                 f"{report.fault}{rec} — verdict {report.verdict}", fontsize=9)
    if seen:
        ax.legend(loc="lower left", fontsize=7, ncol=4)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return True
