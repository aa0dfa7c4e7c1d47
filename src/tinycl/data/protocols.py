"""CORe50 protocols as streams of experiences: NICv2-{391,196,79}, NI, NC.

A stream is a list of ``Experience``s, each the indices of its training samples in a
training ``ImageSet``; the same rules apply to the synthetic benchmark, to real CORe50
without filelists, and to user data that carries session and object ids.

NICv2 (Lomonaco et al. 2019, as summarized in REFERENCES.md): batch 0 holds the first object
of each category in the first training session; every later batch is one (object, session)
video; new objects are introduced gradually, the last well before the end of the stream
(CORe50 run 0 has all 50 classes by batch 340 of 390, i.e. by 87 % of the stream).
NICv2-196 and -79 group consecutive videos of that order in twos and fives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinycl.data.base import ImageSet
from tinycl.errors import TinyclError

# Fraction of the stream by which every class has been introduced (CORe50 NICv2-391 run 0:
# batch 340 of 390, REFERENCES.md).
LAST_INTRO_FRACTION = 340 / 390
NICV2_GROUPS = {"nicv2_391": 1, "nicv2_196": 2, "nicv2_79": 5}
# "ci": class-incremental tasks of two new categories each (Paissan et al. 2024 on CORe50:
# 5 tasks of 2 of the 10 categories), every session of those categories' objects.
CI_CATEGORIES_PER_TASK = 2
SCENARIOS = (*NICV2_GROUPS, "ni", "nc", "ci")


@dataclass(frozen=True)
class Experience:
    """One training batch of the stream: indices into the training set."""

    index: int
    sample_indices: np.ndarray
    videos: tuple[tuple[int, int], ...]  # (object, session) pairs it holds

    def __len__(self) -> int:
        return len(self.sample_indices)


def videos_of(train: ImageSet) -> dict[tuple[int, int], np.ndarray]:
    """Map each (object, session) pair to its sample indices, in frame order."""
    order = np.lexsort((train.frames, train.sessions, train.objects))
    keys = np.stack([train.objects[order], train.sessions[order]], axis=1)
    out: dict[tuple[int, int], np.ndarray] = {}
    if len(order) == 0:
        return out
    cut = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1
    for chunk in np.split(order, cut):
        out[(int(train.objects[chunk[0]]), int(train.sessions[chunk[0]]))] = chunk
    return out


def category_of(objects: np.ndarray | int, objects_per_category: int = 5):
    """CORe50 categories from object ids: ``label // 5`` (REFERENCES.md)."""
    return objects // objects_per_category


def nicv2_video_order(
    videos: list[tuple[int, int]], category: dict[int, int], run: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Batch-0 videos and the order of all other videos, by the NICv2 rules, seeded by ``run``.

    ``category`` maps each object to its category; batch 0 takes the first object of each.
    """
    rng = np.random.default_rng(1_000_003 + run)
    sessions = sorted({s for _, s in videos})
    objects = sorted({o for o, _ in videos})
    first_session = sessions[0]
    categories = sorted({category[o] for o in objects})
    initial_objects = [min(o for o in objects if category[o] == c) for c in categories]
    batch0 = [(o, first_session) for o in initial_objects if (o, first_session) in set(videos)]
    if not batch0:
        raise TinyclError("no video of the first training session: cannot build NICv2 batch 0")
    rest = [v for v in videos if v not in set(batch0)]
    seen = {o for o, _ in batch0}
    new_objects = [o for o in objects if o not in seen]
    new_objects = [new_objects[i] for i in rng.permutation(len(new_objects))]
    n_rest = len(rest)
    # Introduce each new object at evenly spaced positions (with jitter) up to the last
    # introduction point, so classes arrive gradually rather than in a burst.
    horizon = max(1, int(round(LAST_INTRO_FRACTION * n_rest)))
    if new_objects:
        slots = np.linspace(0, horizon - 1, len(new_objects))
        jitter = rng.uniform(-0.4, 0.4, len(new_objects)) * (horizon / max(1, len(new_objects)))
        intro_at = np.clip(np.round(slots + jitter), 0, horizon - 1).astype(int)
        intro_at = np.maximum.accumulate(np.sort(intro_at))
    else:
        intro_at = np.array([], dtype=int)
    by_object: dict[int, list[tuple[int, int]]] = {}
    for v in rest:
        by_object.setdefault(v[0], []).append(v)
    for o in by_object:
        by_object[o] = [by_object[o][i] for i in rng.permutation(len(by_object[o]))]
    pool: list[tuple[int, int]] = [v for o in sorted(seen) for v in by_object.get(o, [])]
    order: list[tuple[int, int]] = []
    next_new = 0
    for position in range(n_rest):
        due = next_new < len(new_objects) and (intro_at[next_new] <= position or not pool)
        if due:
            obj = new_objects[next_new]
            next_new += 1
            own = by_object[obj]
            order.append(own[0])
            pool.extend(own[1:])
        else:
            order.append(pool.pop(int(rng.integers(len(pool)))))
    return batch0, order


def object_categories(train: ImageSet, objects_per_category: int | None) -> dict[int, int]:
    """Category of every object: ``object // k`` (CORe50: k = 5) or, when ``k`` is None,
    the label its samples carry (user data whose labels are classes of several objects)."""
    objects = np.unique(train.objects)
    if objects_per_category:
        return {int(o): int(o) // objects_per_category for o in objects}
    first = {int(o): int(train.labels[np.argmax(train.objects == o)]) for o in objects}
    return first


def build_stream(
    train: ImageSet, scenario: str, run: int = 0, objects_per_category: int | None = 5
) -> list[Experience]:
    """Split ``train`` into the experiences of ``scenario``."""
    if scenario not in SCENARIOS:
        raise TinyclError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if run < 0:
        raise TinyclError(f"--run must be >= 0, got {run}")
    by_video = videos_of(train)
    if not by_video:
        raise TinyclError("the training set is empty")
    videos = sorted(by_video)
    groups: list[list[tuple[int, int]]]
    if scenario in NICV2_GROUPS:
        category = object_categories(train, objects_per_category)
        batch0, order = nicv2_video_order(videos, category, run)
        size = NICV2_GROUPS[scenario]
        groups = [batch0] + [order[i : i + size] for i in range(0, len(order), size)]
    elif scenario == "ni":
        # New instances: one batch per training session, every object in it.
        groups = [[v for v in videos if v[1] == s] for s in sorted({s for _, s in videos})]
    elif scenario == "nc":
        groups = _nc_groups(videos, run)
    else:
        groups = _ci_groups(videos, object_categories(train, objects_per_category), run)
    return [
        Experience(i, np.concatenate([by_video[v] for v in group]), tuple(group))
        for i, group in enumerate(groups)
    ]


def _nc_groups(videos: list[tuple[int, int]], run: int) -> list[list[tuple[int, int]]]:
    """New classes (CORe50 NC): 10 classes first, then 5 new classes per batch, all sessions."""
    rng = np.random.default_rng(2_000_003 + run)
    objects = sorted({o for o, _ in videos})
    objects = [objects[i] for i in rng.permutation(len(objects))]
    first, rest = objects[:10], objects[10:]
    chunks = [first] + [rest[i : i + 5] for i in range(0, len(rest), 5)]
    return [[v for v in videos if v[0] in set(chunk)] for chunk in chunks]


def _ci_groups(videos: list[tuple[int, int]], category: dict[int, int], run: int) -> list[list[tuple[int, int]]]:
    """Class-incremental: categories in a run-seeded order, two new categories per task."""
    rng = np.random.default_rng(3_000_003 + run)
    cats = sorted(set(category.values()))
    cats = [cats[i] for i in rng.permutation(len(cats))]
    tasks = [cats[i : i + CI_CATEGORIES_PER_TASK] for i in range(0, len(cats), CI_CATEGORIES_PER_TASK)]
    return [[v for v in videos if category[v[0]] in set(task)] for task in tasks]


# Which per-sample ids each scenario needs on user data (README "Your own data").
USER_NEEDS = {"nicv2_391": ("sessions", "objects"), "nicv2_196": ("sessions", "objects"),
              "nicv2_79": ("sessions", "objects"), "ni": (), "nc": (), "ci": ()}


def build_user_stream(train: ImageSet, scenario: str, run: int, classes_per_task: int, batches: int
                      ) -> tuple[list[Experience], str | None]:
    """The experiences of ``scenario`` on user data, and a note saying how they were formed.

    - ``nicv2_*``: CORe50's rules on (object, session) videos: needs both ids (refused in one
      line otherwise, naming the missing keys and the scenarios that fit);
    - ``ni``: with session ids (two or more sessions), one batch per session; otherwise the
      same classes in ``batches`` batches of a run-seeded shuffle (new instances of known classes);
    - ``nc`` and ``ci``: the classes in a run-seeded order, ``classes_per_task`` new classes
      per task, every sample of them (Paissan et al. 2024: tasks of two new classes).
    """
    missing = [key for key in USER_NEEDS.get(scenario, ()) if key not in train.ids]
    if missing:
        fit = [s for s, needs in USER_NEEDS.items() if set(needs) <= train.ids]
        raise TinyclError(f"--scenario {scenario} needs per-sample {' and '.join(missing)} ids "
                          f"({', '.join(f'train_{k}' for k in missing)} in the arrays file; a folder has no object "
                          f"ids); this data fits: {', '.join(fit)}")
    if scenario in NICV2_GROUPS:
        return build_stream(train, scenario, run, objects_per_category=None), None
    labels = train.labels
    if scenario == "ni":
        sessions = np.unique(train.sessions)
        if "sessions" in train.ids and len(sessions) > 1:
            return build_stream(train, "ni", run, objects_per_category=None), \
                f"ni: one batch per session ({len(sessions)} sessions)"
        if not 1 <= batches <= len(labels):
            raise TinyclError(f"--batches must be in 1..{len(labels)} (training images), got {batches}")
        order = np.random.default_rng(4_000_003 + run).permutation(len(labels))
        parts = [np.sort(p) for p in np.array_split(order, batches)]
        return [Experience(i, p, ()) for i, p in enumerate(parts)], \
            f"ni: the data has no session ids, so every class is split into {batches} shuffled batches (--batches)"
    classes = np.unique(labels)
    if not 1 <= classes_per_task <= len(classes):
        raise TinyclError(f"--classes-per-task must be in 1..{len(classes)} (classes in the data), "
                          f"got {classes_per_task}")
    rng = np.random.default_rng((2_000_003 if scenario == "nc" else 3_000_003) + run)
    classes = classes[rng.permutation(len(classes))]
    tasks = [classes[i : i + classes_per_task] for i in range(0, len(classes), classes_per_task)]
    parts = [np.flatnonzero(np.isin(labels, task)) for task in tasks]
    return [Experience(i, p, ()) for i, p in enumerate(parts)], \
        f"{scenario}: {len(tasks)} tasks of {classes_per_task} new classes each (--classes-per-task)"
