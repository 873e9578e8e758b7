"""Checking notebook parameters (papermill injects them as plain Python values) before anything runs."""
from __future__ import annotations

from pathlib import Path

from nanogpt.run.profiles import PROFILES
from nanogpt.study.runs import DESIGNS, parse_seeds


class ParameterError(ValueError):
    """A notebook parameter of the wrong type or value; the message names it and says what is allowed."""


def check_profile(profile) -> str:
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ParameterError(f"parameter profile={profile!r}: use one of {sorted(PROFILES)}.")
    return profile


def check_design(design) -> str:
    if not isinstance(design, str) or design not in DESIGNS:
        raise ParameterError(f"parameter design={design!r}: use one of {list(DESIGNS)}.")
    return design


def check_workers(workers) -> int | None:
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ParameterError(f"parameter workers={workers!r}: None (train here) or a number of workers >= 1.")
    return workers


def check_scheduler(scheduler) -> str | None:
    if scheduler is None:
        return None
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise ParameterError(f"parameter scheduler={scheduler!r}: None or an address such as 'tcp://host:8786'.")
    return scheduler.strip()


def check_population(population) -> tuple[str, str] | None:
    """None (this machine's population, where it has the runs) or 'device/precision', such as 'cpu/bf16'."""
    if population is None:
        return None
    parts = population.split("/") if isinstance(population, str) else []
    if len(parts) != 2 or not all(part.strip() for part in parts):
        raise ParameterError(f"parameter population={population!r}: None, or 'device/precision' such as 'cpu/bf16' "
                             "or 'cuda/bf16' (the device and precision columns of runs.csv).")
    return parts[0].strip(), parts[1].strip()


def check_seeds(seeds) -> list[int]:
    """Seeds as '0-4', '0,1,2', an int, or a list of ints."""
    if isinstance(seeds, bool):
        raise ParameterError(f"parameter seeds={seeds!r}: give a range like '0-4' or a list of ints.")
    if isinstance(seeds, int):
        seeds = [seeds]
    if isinstance(seeds, (list, tuple)):
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise ParameterError(f"parameter seeds={seeds!r}: a list of integers >= 0 is needed.")
        return list(dict.fromkeys(seeds))
    if isinstance(seeds, str):
        try:
            return parse_seeds(seeds)
        except ValueError as exc:
            raise ParameterError(f"parameter seeds: {exc}") from None
    raise ParameterError(f"parameter seeds={seeds!r} ({type(seeds).__name__}): give '0-4' or a list of ints.")


def check_source(source) -> str:
    if not isinstance(source, str) or not (source in ("bundled", "hub") or Path(source).is_file()):
        raise ParameterError(f"parameter source={source!r}: use 'bundled', 'hub', or the path of a CSV file.")
    return source


def check_folder(name: str, value) -> Path:
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise ParameterError(f"parameter {name}={value!r}: give a folder path as a string.")
    return Path(value)


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ParameterError(f"parameter {name}={value!r}: a positive integer is needed.")
    return value


def check_name(name) -> str | None:
    """A study's name (None: the profile's): it names a report file and a figures folder."""
    import re

    if name is None:
        return None
    if not isinstance(name, str) or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name) is None:
        raise ParameterError(f"parameter name={name!r}: letters, digits, '_', '-' or '.', starting with a letter or "
                             "digit (it names a report and a figures folder).")
    return name


def check_loss(loss) -> str:
    from nanogpt.core.losses import LOSS_NAMES

    if loss not in LOSS_NAMES:
        raise ParameterError(f"parameter loss={loss!r}: use one of {LOSS_NAMES}.")
    return loss


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError(f"parameter seed={seed!r}: give an integer >= 0.")
    return seed
