"""``samples.natality``: synthetic US births shaped like BigQuery ``publicdata.samples.natality``.

Same 31 columns, names and types as the public table (1969-2008), with the gaps the real table
has (``day`` only up to 1988, Apgar scores 1978-2002, tobacco/alcohol/weight gain from 1989,
states only up to 2004, ``99`` for unknown) and the effects the "baby weight" tutorial models:
weight rises with gestation weeks, falls with plurality, is ~0.3 lb higher for boys and peaks
for mothers around 30.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mlengine.data.samples._base import (
    BLOCK_ROWS,
    Categorical,
    SampleDataset,
    block_rng,
    bools,
    floats,
    ints,
    strings,
)

NAME = "natality"

SCHEMA = pa.schema(
    [
        pa.field("source_year", pa.int64(), nullable=False),
        pa.field("year", pa.int64()),
        pa.field("month", pa.int64()),
        pa.field("day", pa.int64()),
        pa.field("wday", pa.int64()),
        pa.field("state", pa.string()),
        pa.field("is_male", pa.bool_(), nullable=False),
        pa.field("child_race", pa.int64()),
        pa.field("weight_pounds", pa.float64()),
        pa.field("plurality", pa.int64()),
        pa.field("apgar_1min", pa.int64()),
        pa.field("apgar_5min", pa.int64()),
        pa.field("mother_residence_state", pa.string()),
        pa.field("mother_race", pa.int64()),
        pa.field("mother_age", pa.int64()),
        pa.field("gestation_weeks", pa.int64()),
        pa.field("lmp", pa.string()),
        pa.field("mother_married", pa.bool_()),
        pa.field("mother_birth_state", pa.string()),
        pa.field("cigarette_use", pa.bool_()),
        pa.field("cigarettes_per_day", pa.int64()),
        pa.field("alcohol_use", pa.bool_()),
        pa.field("drinks_per_week", pa.int64()),
        pa.field("weight_gain_pounds", pa.int64()),
        pa.field("born_alive_alive", pa.int64()),
        pa.field("born_alive_dead", pa.int64()),
        pa.field("born_dead", pa.int64()),
        pa.field("ever_born", pa.int64()),
        pa.field("father_race", pa.int64()),
        pa.field("father_age", pa.int64()),
        pa.field("record_weight", pa.int64()),
    ]
)

FIRST_YEAR, LAST_YEAR = 1969, 2008
YEARS = np.arange(FIRST_YEAR, LAST_YEAR + 1)
# US births per year, millions (NCHS); years up to 1984 hold fewer rows because part of their
# records came from 50% samples (record_weight 2).
_BIRTHS = [
    3.60, 3.73, 3.56, 3.26, 3.14, 3.16, 3.14, 3.17, 3.33, 3.33,
    3.49, 3.61, 3.63, 3.68, 3.64, 3.67, 3.76, 3.76, 3.81, 3.91,
    4.04, 4.16, 4.11, 4.07, 4.00, 3.95, 3.90, 3.89, 3.88, 3.94,
    3.96, 4.06, 4.03, 4.02, 4.09, 4.11, 4.14, 4.27, 4.32, 4.25,
]  # fmt: skip
_HALF_SAMPLED = 0.3  # share of pre-1985 records that carry record_weight 2
_YEAR = Categorical(
    [b * (1 - _HALF_SAMPLED / 2 if y < 1985 else 1.0) for y, b in zip(YEARS, _BIRTHS, strict=True)]
)
_MONTH = Categorical([8.1, 7.6, 8.3, 8.0, 8.4, 8.4, 8.9, 9.1, 8.8, 8.6, 8.1, 8.5])

# 50 states and DC, weighted by population (2000 census, millions).
_STATES = {
    "CA": 33.9, "TX": 20.9, "NY": 19.0, "FL": 16.0, "IL": 12.4, "PA": 12.3, "OH": 11.4,
    "MI": 9.9, "NJ": 8.4, "GA": 8.2, "NC": 8.0, "VA": 7.1, "MA": 6.3, "IN": 6.1, "WA": 5.9,
    "TN": 5.7, "MO": 5.6, "WI": 5.4, "MD": 5.3, "AZ": 5.1, "MN": 4.9, "LA": 4.5, "AL": 4.4,
    "CO": 4.3, "KY": 4.0, "SC": 4.0, "OK": 3.5, "OR": 3.4, "CT": 3.4, "IA": 2.9, "MS": 2.8,
    "KS": 2.7, "AR": 2.7, "UT": 2.2, "NV": 2.0, "NM": 1.8, "WV": 1.8, "NE": 1.7, "ID": 1.3,
    "ME": 1.3, "NH": 1.2, "HI": 1.2, "RI": 1.0, "MT": 0.9, "DE": 0.8, "SD": 0.75, "ND": 0.64,
    "AK": 0.63, "VT": 0.61, "DC": 0.57, "WY": 0.49,
}  # fmt: skip
_STATE_NAMES = pa.array(list(_STATES), type=pa.string())
_STATE = Categorical(list(_STATES.values()))

# Race codes of the public table: 1 White, 2 Black, 3 American Indian, 4 Chinese, 5 Japanese,
# 6 Hawaiian, 7 Filipino, 9 Unknown/Other, 18 Asian Indian, 28 Korean, 39 Samoan, 48 Vietnamese.
_RACES = np.array([1, 2, 3, 4, 5, 6, 7, 9, 18, 28, 39, 48])
_RACE = Categorical([79.0, 15.5, 0.9, 0.6, 0.3, 0.1, 0.6, 1.2, 0.6, 0.3, 0.05, 0.4])
_CIGARETTES = np.array([2, 3, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40])
_CIGARETTE = Categorical([4, 5, 18, 5, 5, 25, 3, 10, 18, 2, 3, 2])

# Mean birth weight (lb) of a singleton by completed gestation weeks (US growth references).
_GESTATION_KNOTS = np.array([17, 20, 24, 28, 30, 32, 34, 36, 37, 38, 39, 40, 41, 42, 44, 47])
_WEIGHT_KNOTS = np.array(
    [0.6, 0.8, 1.4, 2.5, 3.1, 3.9, 5.0, 6.0, 6.5, 7.0, 7.35, 7.6, 7.8, 7.9, 8.0, 8.0]
)
_PLURALITY_GESTATION = np.array([0.0, 39.4, 35.6, 32.2, 29.8, 28.0])
_GRAMS_PER_POUND = 453.59237
_APGAR_DROP = np.array([0, 1, 1, 1, 2, 3])
# Mother's age: share of births by age group around 1970 and in 2008 (NCHS); a row draws from
# the two in proportion to how far its year is between them.
_AGE_GROUPS = [(12, 15), (15, 20), (20, 25), (25, 30), (30, 35), (35, 40), (40, 45), (45, 55)]
_AGES = np.arange(12, 55)


def _age_weights(shares: list[float]) -> list[float]:
    """Per-year weights: flat within a group, ramping up to 15 and down from 45."""
    weights: list[float] = []
    for (low, high), share in zip(_AGE_GROUPS, shares, strict=True):
        ramp = np.ones(high - low)
        if low == 12:
            ramp = np.arange(1.0, high - low + 1)
        elif low == 45:
            ramp = np.arange(float(high - low), 0.0, -1.0)
        weights.extend(share * ramp / ramp.sum())
    return weights


_AGE_1970 = Categorical(_age_weights([0.3, 17.6, 35.2, 26.0, 12.4, 6.1, 2.0, 0.1]))
_AGE_2008 = Categorical(_age_weights([0.1, 10.0, 24.5, 29.0, 22.0, 11.3, 2.6, 0.2]))
UNKNOWN = 99


def generate_block(seed: int, total_rows: int, index: int) -> pa.RecordBatch:
    """Block ``index`` of the natality sample (see the module docstring)."""
    del total_rows  # every row is independent: the table of N rows is a prefix of a larger one
    rng = block_rng(seed, NAME, index)
    n = BLOCK_ROWS
    uniform = rng.random

    year = YEARS[_YEAR.draw(uniform(n))]
    trend = (year - FIRST_YEAR) / (LAST_YEAR - FIRST_YEAR)  # 0 in 1969, 1 in 2008
    month = _MONTH.draw(uniform(n)) + 1
    month_index = (year - FIRST_YEAR) * 12 + month - 1
    first_of_month = _FIRST_OF_MONTH[month_index]  # days since 1970-01-01
    days_in_month = _DAYS_IN_MONTH[month_index]
    day = (uniform(n) * days_in_month).astype(np.int64) + 1
    wday = _weekday(first_of_month, day)
    # Planned deliveries moved births off weekends over the decades.
    moved = (wday == 7) | (wday == 1)
    moved &= uniform(n) < 0.3 * trend
    saturday = moved & (wday == 7)
    sunday = moved & (wday == 1)
    day = np.where(saturday, np.where(day > 1, day - 1, day + 2), day)
    day = np.where(sunday, np.where(day < days_in_month, day + 1, day - 2), day)
    wday = _weekday(first_of_month, day)
    birth_date = first_of_month + (day - 1)

    is_male = uniform(n) < 0.512
    state_index = _STATE.draw(uniform(n))
    residence_index = np.where(uniform(n) < 0.97, state_index, _STATE.draw(uniform(n)))
    birth_state_index = np.where(uniform(n) < 0.62, residence_index, _STATE.draw(uniform(n)))
    no_state = year > 2004

    age_draw = uniform(n)
    mother_age = _AGES[
        np.where(uniform(n) < trend, _AGE_2008.draw(age_draw), _AGE_1970.draw(age_draw))
    ]
    married_p = np.clip(0.90 - 0.30 * trend + 0.015 * (mother_age - 25), 0.05, 0.98)
    married = uniform(n) < married_p

    mother_race = _RACES[_RACE.draw(uniform(n))]
    father_race = np.where(uniform(n) < 0.93, mother_race, _RACES[_RACE.draw(uniform(n))])
    father_unknown = uniform(n) < np.where(married, 0.04, 0.45)
    father_race = np.where(father_unknown, 9, father_race)
    father_age = mother_age + np.rint(rng.normal(2.7, 4.0, n)).astype(np.int64)
    father_age = np.where(father_unknown, UNKNOWN, np.clip(father_age, 15, 80))
    child_race = np.where(uniform(n) < 0.95, mother_race, father_race)

    # Plurality: twins rose from ~1.8% (1980) to ~3.3% (2008), triplets+ peaked around 1998.
    twin_p = 0.018 + 0.015 * np.clip((year - 1980) / 28, 0, 1)
    higher_p = 0.0004 + 0.0014 * np.clip((year - 1985) / 13, 0, 1)
    draw = uniform(n)
    plurality = np.ones(n, dtype=np.int64)
    plurality += draw < twin_p + higher_p
    plurality += draw < higher_p
    plurality += draw < higher_p * 0.1
    plurality += draw < higher_p * 0.01

    previous_alive = _geometric(uniform(n), _LOG_KEEP_ALIVE[mother_age])
    previous_dead = (uniform(n) < 0.015 * (previous_alive + 1)).astype(np.int64)
    stillborn = _geometric(uniform(n), _LOG_KEEP_STILLBORN[mother_age])
    parity_unknown = uniform(n) < 0.005
    ever_born = previous_alive + previous_dead + 1

    smoker_p = np.clip(0.195 - 0.09 * (year - 1989) / 19 + 0.08 * ~married, 0.0, 1.0)
    smoker = (uniform(n) < smoker_p) & (year >= 1989)
    cigarettes = np.where(smoker, _CIGARETTES[_CIGARETTE.draw(uniform(n))], 0)
    drinker = (uniform(n) < np.clip(0.04 - 0.03 * (year - 1989) / 19, 0.0, 1.0)) & (year >= 1989)
    drinks = np.where(drinker, 1 + _geometric(uniform(n), _log_keep(1.9)), 0)
    weight_gain = np.clip(np.rint(rng.normal(30.5, 12.5, n)), 0, 98).astype(np.int64)

    # Completed weeks of gestation; multiples come earlier, singletons have a preterm tail.
    preterm = uniform(n) < 0.07
    singleton = np.where(
        preterm, 36.6 - 2.6 * rng.standard_exponential(n), 39.3 + 1.5 * rng.standard_normal(n)
    )
    multiple = _PLURALITY_GESTATION[plurality] + 2.8 * rng.standard_normal(n)
    gestation = np.where(plurality == 1, singleton, multiple) - 0.3 * smoker
    gestation = np.clip(np.rint(gestation), 17, 47).astype(np.int64)

    race_effect = np.select([mother_race == 2, np.isin(mother_race, [4, 5, 7, 18, 28, 48])],
                            [-0.45, -0.3], 0.0)  # fmt: skip
    expected = (
        np.interp(gestation, _GESTATION_KNOTS, _WEIGHT_KNOTS)
        + 0.2
        + np.where(is_male, 0.15, -0.15)
        - 0.55 * (plurality - 1)
        - 0.0018 * (mother_age - 30.0) ** 2
        + race_effect
        - 0.35 * smoker
        - 0.008 * cigarettes
        - 0.15 * drinker
        + np.where(year >= 1989, 0.012 * (weight_gain - 30), 0.0)
        + 0.1 * married
        - 0.08 * (ever_born == 1)
    )
    pounds = expected + (0.11 * expected + 0.15) * rng.standard_normal(n)
    grams = np.rint(np.clip(pounds, 0.5, 14.5) * _GRAMS_PER_POUND)
    weight_pounds = grams / _GRAMS_PER_POUND

    apgar_5 = np.clip(np.rint(9.0 - 0.25 * np.clip(37 - gestation, 0, None)
                              + 0.45 * rng.standard_normal(n)), 0, 10)  # fmt: skip
    apgar_1 = np.clip(apgar_5 - _APGAR_DROP[(uniform(n) * 6).astype(np.intp)], 0, 10)
    apgar_unknown = uniform(n) < 0.01
    apgar_missing = (year < 1978) | (year > 2002)

    # What the record leaves unknown (99) or blank (null), as the public table does.
    gestation_code = uniform(n)
    gestation_unknown = gestation_code < 0.008
    gestation_null = (gestation_code >= 0.008) & (gestation_code < 0.011)
    gestation_out = np.where(gestation_unknown, UNKNOWN, gestation)
    lmp_date = birth_date - gestation * 7 - (uniform(n) * 7).astype(np.int64)
    lmp_day_unknown = uniform(n) < 0.06
    tobacco_missing = (year < 1989) | (uniform(n) < 0.01)
    gain_unknown = uniform(n) < 0.05

    columns = [
        ints(year),
        ints(year),
        ints(month),
        ints(day, mask=year >= 1989),
        ints(wday),
        strings(state_index, _STATE_NAMES, mask=no_state),
        bools(is_male),
        ints(child_race, mask=year >= 2003),
        floats(weight_pounds, mask=uniform(n) < 0.001),
        ints(plurality),
        ints(np.where(apgar_unknown, UNKNOWN, apgar_1), mask=apgar_missing),
        ints(np.where(apgar_unknown, UNKNOWN, apgar_5), mask=apgar_missing),
        strings(residence_index, _STATE_NAMES, mask=no_state),
        ints(mother_race),
        ints(mother_age),
        ints(gestation_out, mask=gestation_null),
        _lmp(lmp_date, lmp_day_unknown, gestation_unknown, gestation_null),
        bools(married),
        strings(birth_state_index, _STATE_NAMES, mask=no_state),
        bools(smoker, mask=tobacco_missing),
        ints(np.where(smoker & (uniform(n) < 0.02), UNKNOWN, cigarettes), mask=tobacco_missing),
        bools(drinker, mask=tobacco_missing),
        ints(np.where(drinker & (uniform(n) < 0.02), UNKNOWN, drinks), mask=tobacco_missing),
        ints(np.where(gain_unknown, UNKNOWN, weight_gain), mask=year < 1989),
        ints(np.where(parity_unknown, UNKNOWN, previous_alive)),
        ints(np.where(parity_unknown, UNKNOWN, previous_dead)),
        ints(np.where(parity_unknown, UNKNOWN, stillborn)),
        ints(np.where(parity_unknown, UNKNOWN, ever_born)),
        ints(father_race),
        ints(father_age),
        ints(np.where((year < 1985) & (uniform(n) < _HALF_SAMPLED), 2, 1)),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


def _geometric(uniform: np.ndarray, log_keep: np.ndarray | float) -> np.ndarray:
    """Geometric counts 0, 1, 2, ... by inversion (``log_keep`` from :func:`_log_keep`)."""
    return np.floor(np.log1p(-uniform) / log_keep).astype(np.int64)


def _log_keep(mean: np.ndarray | float) -> np.ndarray:
    """log P(count > k | count >= k) of the geometric distribution with this mean."""
    return np.log(np.asarray(mean) / (1.0 + np.asarray(mean)))


_AGE_RANGE = np.arange(55)
_LOG_KEEP_ALIVE = _log_keep(np.clip(0.085 * (_AGE_RANGE - 16), 0.05, None))
_LOG_KEEP_STILLBORN = _log_keep(np.clip(0.1 + 0.012 * (_AGE_RANGE - 20), 0.02, None))

_MONTHS = np.arange(
    np.datetime64(f"{FIRST_YEAR}-01"), np.datetime64(f"{LAST_YEAR + 1}-02"), dtype="datetime64[M]"
)
_FIRST_OF_MONTH = _MONTHS.astype("datetime64[D]").astype(np.int64)[:-1]
_DAYS_IN_MONTH = np.diff(_MONTHS.astype("datetime64[D]").astype(np.int64))


def _weekday(first_of_month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """BigQuery's wday: 1 is Sunday, 7 is Saturday (1970-01-01 was a Thursday)."""
    return (first_of_month + day + 3) % 7 + 1


# Every possible lmp text: each day from 1968 to 2008, then MM99YYYY for each month (day
# unknown), then 99999999 (unknown).
_LMP_FIRST = np.datetime64(f"{FIRST_YEAR - 1}-01-01").astype(np.int64)
_LMP_DAYS = np.arange(
    np.datetime64(f"{FIRST_YEAR - 1}-01-01"), np.datetime64(f"{LAST_YEAR + 1}-01-01")
)
_LMP_MONTHS = np.arange(np.datetime64(f"{FIRST_YEAR - 1}-01"), np.datetime64(f"{LAST_YEAR + 1}-01"))
_LMP_MONTH_OF_DAY = (_LMP_DAYS.astype("datetime64[M]") - _LMP_MONTHS[0]).astype(np.int64)
_LMP_TEXT = pa.array(
    [f"{d.month:02d}{d.day:02d}{d.year}" for d in _LMP_DAYS.tolist()]
    + [f"{m.month:02d}99{m.year}" for m in _LMP_MONTHS.tolist()]
    + ["99999999"]
)


def _lmp(
    days: np.ndarray, day_unknown: np.ndarray, unknown: np.ndarray, null: np.ndarray
) -> pa.Array:
    """Last menstrual period as MMDDYYYY text; ``99`` for an unknown day, ``99999999`` unknown."""
    index = np.clip(days - _LMP_FIRST, 0, len(_LMP_DAYS) - 1)
    index = np.where(day_unknown, len(_LMP_DAYS) + _LMP_MONTH_OF_DAY[index], index)
    index = np.where(unknown, len(_LMP_TEXT) - 1, index)
    return strings(index, _LMP_TEXT, mask=null)


DATASET = SampleDataset(
    name=NAME,
    description=(
        "Synthetic US births 1969-2008 with the columns of BigQuery publicdata.samples.natality"
    ),
    default_rows=1_000_000,
    schema=SCHEMA,
    generate_block=generate_block,
)
